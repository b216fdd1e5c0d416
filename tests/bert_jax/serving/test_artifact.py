"""The StableHLO serving artifact: parity with the model for every task and the encoder,
symbolic shapes, running without Flax or the model code, and refusing what it cannot run."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bert_jax.serving import export_artifact
from bert_jax.serving import runtime
from tests.helpers import REPO
from tests.helpers import serving as S

TASKS = ("classification", "regression", "ner", "qa", "encoder")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """{task: (model_dir, artifact_dir)}; classification's for cpu, cuda and tpu (lowering
  for each costs a compile-sized wait: once is enough)."""
  root = tmp_path_factory.mktemp("artifacts")
  out = {}
  for task in TASKS:
    model_dir = S.make_model_dir(str(root / task), task)
    art = str(root / f"{task}-art")
    platforms = ("cpu", "cuda", "tpu") if task == "classification" else ("cpu",)
    export_artifact.export(model_dir, art, platforms=platforms, bucket_widths=(16,))
    out[task] = (model_dir, art)
  return out


def _batch(rows, width):
  """Rows of different lengths (ids within the test vocabulary), padded to `width`."""
  rng = np.random.default_rng(rows * 100 + width)
  ids = np.zeros((rows, width), np.int32)
  types = np.zeros_like(ids)
  for i in range(rows):
    n = int(rng.integers(3, width + 1))
    ids[i, :n] = np.concatenate([[2], rng.integers(5, len(S.VOCAB), n - 2), [3]])
    types[i, n // 2:n] = 1
  return dict(input_ids=ids, token_type_ids=types, attention_mask=(ids > 0).astype(np.int32))


def _reference(model_dir, batch):
  """The model's own jitted forward and predict on `batch`."""
  meta = export_artifact.read_model_dir(model_dir)
  model, params, task = export_artifact.load_model(model_dir, meta)
  fn = jax.jit(export_artifact.inference_fn(model, task))
  return jax.tree.map(np.asarray, fn(params, *[batch[k] for k in runtime.INPUTS]))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("task", TASKS)
def test_parity_at_shapes_never_exported(exported, task):
  model_dir, art = exported[task]
  artifact = runtime.load(art)
  m = artifact.manifest
  assert m["task"] == task and "cpu" in m["platforms"]
  assert len(m["platforms"]) == (3 if task == "classification" else 1)
  assert m["model_hash"] == export_artifact.model_hash(model_dir)
  assert m["bucket_widths"] == [16, 32 if task != "encoder" else 64]
  shapes = ((1, 7), (3, 29)) if task == "classification" else ((3, 29),)
  for rows, width in shapes:  # symbolic b and l: shapes never exported run
    batch = _batch(rows, width)
    got, want = artifact.run(batch), _reference(model_dir, batch)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert _max_diff(got["outputs"], want["outputs"]) <= 1e-5
    if task == "ner":
      assert np.array_equal(got["predictions"], want["predictions"])


_BLOCKED_RUN = r"""
import importlib.abc, sys
BLOCKED = ("flax", "bert_jax.model", "bert_jax.finetune", "bert_jax.serving.export_artifact",
           "data_pipeline", "transformers", "torch")

class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if any(name == b or name.startswith(b + ".") for b in BLOCKED):
      raise ImportError(f"{name} is blocked: the artifact must run without it")
    return None

sys.meta_path.insert(0, Blocker())
import numpy as np
from bert_jax.serving import runtime
art, batch_file, out_file = sys.argv[1:]
batch = dict(np.load(batch_file))
out = runtime.load(art).run(batch)
leaves = __import__("jax").tree.leaves(out)
np.savez(out_file, *leaves)
assert not any(m == b or m.startswith(b + ".") for m in sys.modules for b in BLOCKED)
print("ran without", ", ".join(BLOCKED))
"""


def test_runs_without_flax_or_model_code(exported, tmp_path):
  model_dir, art = exported["qa"]
  batch = _batch(4, 21)
  np.savez(tmp_path / "batch.npz", **batch)
  proc = subprocess.run([sys.executable, "-c", _BLOCKED_RUN, art, str(tmp_path / "batch.npz"),
                         str(tmp_path / "out.npz")], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "ran without flax" in proc.stdout
  with np.load(tmp_path / "out.npz") as f:
    got = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
  want = jax.tree.leaves(_reference(model_dir, batch))
  assert _max_diff(got, want) <= 1e-5


def test_refuses_what_it_cannot_run(exported, tmp_path):
  model_dir, art = exported["classification"]
  tpu_only = str(tmp_path / "tpu")
  export_artifact.export(model_dir, tpu_only, platforms=("tpu",))
  with pytest.raises(runtime.ArtifactError, match=r"exported for \['tpu'\], not for .* cpu"):
    runtime.load(tpu_only)
  manifest = json.loads(open(os.path.join(tpu_only, runtime.MANIFEST_FILE)).read())
  manifest.update(format_version=99, platforms=["cpu"])
  with open(os.path.join(tpu_only, runtime.MANIFEST_FILE), "w") as f:
    json.dump(manifest, f)
  with pytest.raises(runtime.ArtifactError, match="format version 99"):
    runtime.load(tpu_only)
  with pytest.raises(runtime.ArtifactError, match="not a serving artifact"):
    runtime.load(model_dir)
  artifact = runtime.load(art)
  with pytest.raises(runtime.ArtifactError, match="not compiled"):
    artifact.run(_batch(2, 16), strict=True)
  with pytest.raises(ValueError, match="not empty"):
    export_artifact.export(model_dir, art)
  with pytest.raises(ValueError, match="--platforms=gpu"):
    export_artifact.export(model_dir, str(tmp_path / "x"), platforms=("gpu",))


def test_model_dir_without_its_task_manifest(exported, tmp_path):
  model_dir, _ = exported["classification"]
  bare = tmp_path / "bare"
  bare.mkdir()
  for name in os.listdir(model_dir):
    if name != "finetune.json":
      (bare / name).write_bytes(open(os.path.join(model_dir, name), "rb").read())
  with pytest.raises(ValueError, match="without its task manifest finetune.json"):
    export_artifact.read_model_dir(str(bare))
