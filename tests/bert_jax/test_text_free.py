"""bert_jax stands without the text side: no module of it imports (or names) data_pipeline,
and a synthetic pretraining run and the benchmark work with the text packages blocked."""
import os
import pathlib
import subprocess
import sys

from tests import helpers
REPO = pathlib.Path(helpers.REPO)
BLOCKED = ("data_pipeline", "sentencepiece", "tokenizers", "grain", "array_record",
           "tensorflow_datasets", "nltk", "punkt")

_SCRIPT = f"""
import importlib, pkgutil, sys, tempfile
BLOCKED = {BLOCKED!r}

class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Block())

import bert_jax
names = sorted(m.name for m in pkgutil.walk_packages(bert_jax.__path__, "bert_jax."))
for name in names:
  importlib.import_module(name)
assert {{"bert_jax.finetune.tasks.classification", "bert_jax.checkpointing.manager",
        "bert_jax.multihost.distributed", "bert_jax.train"}} <= set(names), names

from bert_jax import benchmark, synthetic, train
from bert_jax.configs import tiny
c = tiny.get_config("tiny")
c.model.num_hidden_layers = 1
c.data.synthetic = True
c.num_train_steps = 2
c.log_every_steps = 1
c.eval_every_steps = 2
c.num_eval_steps = 1
c.write_tensorboard = False
c.checkpoint_every_steps = 0
c.lock()
summary = train.train_and_evaluate(c, tempfile.mkdtemp(), synthetic.SyntheticSource.from_config(c))
assert "eval_mlm_accuracy" in summary and "unigram_mlm_accuracy" not in summary, summary
result = benchmark.run(c, steps=1, warmup_steps=1)
assert result["seq_per_sec"] > 0, result
bad = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not bad, bad
print("ok", len(names))
"""


def test_bert_jax_source_never_names_data_pipeline():
  offenders = [str(p.relative_to(REPO)) for p in (REPO / "bert_jax").rglob("*.py")
               if "data_pipeline" in p.read_text(encoding="utf-8")]
  assert not offenders, offenders


def test_every_module_imports_and_pretrains_synthetically_without_text_packages(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
             XLA_FLAGS=helpers.xla_flags(2))
  result = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  assert result.stdout.strip().splitlines()[-1].startswith("ok")
