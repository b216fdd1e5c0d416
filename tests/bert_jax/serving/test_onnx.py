"""The ONNX artifact: dynamic batch and sequence axes, parity with our JAX model in
onnxruntime (<= 1e-4), and the int8 model beside it."""
import json
import os

import jax
import numpy as np
import pytest

from bert_jax.serving import export_artifact
from bert_jax.serving import onnx_export
from bert_jax.serving import runtime
from tests.helpers import serving as S


@pytest.mark.parametrize("task", ["classification", "qa"])
def test_onnx_matches_the_jax_model(tmp_path, task):
  model_dir = S.make_model_dir(str(tmp_path / task), task, seed=2)
  out = str(tmp_path / "onnx")
  manifest = onnx_export.export(model_dir, out, quantize=task == "classification")
  assert manifest["format"] == "onnx" and manifest["parity_vs_pytorch"] <= 1e-4
  assert json.load(open(os.path.join(out, runtime.MANIFEST_FILE)))["task"] == task
  assert os.path.isfile(os.path.join(out, "vocab.txt"))
  model, params, t = export_artifact.load_model(model_dir, export_artifact.read_model_dir(model_dir))
  fn = jax.jit(export_artifact.inference_fn(model, t))
  for rows, width in ((1, 5), (4, 27)):  # neither is the traced shape (2, 8)
    batch = onnx_export.sample_batch(rows, width, len(S.VOCAB), seed=rows)
    got = onnx_export.run_onnx(os.path.join(out, onnx_export.MODEL_FILE), batch)
    want = jax.tree.leaves(fn(params, *[batch[k].astype(np.int32) for k in runtime.INPUTS])
                           ["outputs"])
    assert [g.shape for g in got] == [w.shape for w in want]
    assert max(float(np.max(np.abs(g - np.asarray(w)))) for g, w in zip(got, want)) <= 1e-4
    if task == "classification":
      int8 = onnx_export.run_onnx(os.path.join(out, onnx_export.INT8_FILE), batch)
      assert int8[0].shape == got[0].shape and np.all(np.isfinite(int8[0]))
