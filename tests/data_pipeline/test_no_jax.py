"""data_pipeline must never import jax (nor need tensorflow)."""
import os
import pkgutil
import subprocess
import sys

import data_pipeline


def test_no_module_imports_jax_or_tensorflow(synthetic_dataset):
  # Every module, subpackages included.
  modules = sorted(m.name for m in pkgutil.walk_packages(data_pipeline.__path__, "data_pipeline."))
  assert {"data_pipeline.loader", "data_pipeline.text.tokenizer",
          "data_pipeline.finetune.tasks.question_answering"} <= set(modules), modules
  code = "\n".join(
      ["import sys"] + [f"import {m}" for m in modules] + [
          # Also build a loader and draw a batch: grain is imported lazily by the loader.
          "from data_pipeline.loader import LoaderConfig, make_pretraining_iterator",
          f"it = make_pretraining_iterator(LoaderConfig({synthetic_dataset!r}, "
          "global_batch_size=4, max_seq_length=32))",
          "next(it)",
          "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', "
          "'tensorflow'))",
          "assert not bad, bad",
      ])
  env = dict(os.environ)
  env.pop("PYTHONPATH", None)
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
