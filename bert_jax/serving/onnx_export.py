"""A fine-tuned model directory -> ONNX, for onnxruntime and the CPU / edge runtimes.

The path: our fine-tuned directory already is a transformers model, so it is exported
the way transformers' own exporter (Optimum) does it, with `torch.onnx.export` of the
PyTorch model (TorchScript tracing, opset 17, eager attention), dynamic batch and
sequence axes. That path is the one the ONNX ecosystem maintains and tests for BERT
(Optimum's BERT configs, onnxruntime's transformer optimiser and quantiser all expect
its graph); the JAX-to-ONNX converters (jax2onnx, tf2onnx through jax2tf, which jax
is retiring) cover less of XLA and are less used. The export is checked in
onnxruntime against PyTorch before it is kept.

The artifact directory: model.onnx (outputs: logits; start_logits and end_logits for
QA; last_hidden_state and pooler_output for the encoder), model.int8.onnx with
`quantize` (onnxruntime's dynamic int8 quantisation of the MatMul weights), the
tokenizer files and manifest.json (as the StableHLO artifact's, format "onnx").
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from bert_jax import fileio
from bert_jax.serving import export_artifact
from bert_jax.serving import runtime

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 17
_AUTO = {"classification": "AutoModelForSequenceClassification",
         "regression": "AutoModelForSequenceClassification",
         "ner": "AutoModelForTokenClassification",
         "qa": "AutoModelForQuestionAnswering",
         export_artifact.ENCODER: "AutoModel"}
_OUTPUTS = {"qa": ("start_logits", "end_logits"),
            export_artifact.ENCODER: ("last_hidden_state", "pooler_output")}


def output_names(task: str) -> tuple[str, ...]:
  return _OUTPUTS.get(task, ("logits",))


def load_torch_model(model_dir: str, task: str):
  import transformers  # pylint: disable=import-outside-toplevel
  cls = getattr(transformers, _AUTO[task])
  model = cls.from_pretrained(model_dir, attn_implementation="eager")
  return model.eval()


def _wrapped(model, names):
  import torch  # pylint: disable=import-outside-toplevel

  class Outputs(torch.nn.Module):
    """The model with plain tensor inputs and a tuple of the named outputs."""

    def __init__(self):
      super().__init__()
      self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
      out = self.model(input_ids=input_ids, token_type_ids=token_type_ids,
                       attention_mask=attention_mask)
      return tuple(out[n] for n in names)

  return Outputs().eval()


def sample_batch(rows: int, width: int, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Rows of different lengths, [CLS]=2 ... [SEP]=3 and padding: for parity checks."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((rows, width), np.int64)
  for i in range(rows):
    n = int(rng.integers(3, width + 1))
    ids[i, :n] = np.concatenate([[2], rng.integers(5, vocab_size, n - 2), [3]])
  types = np.zeros_like(ids)
  types[:, width // 2:] = 1
  return dict(input_ids=ids, token_type_ids=types * (ids > 0),
              attention_mask=(ids > 0).astype(np.int64))


def run_onnx(path: str, batch: dict[str, np.ndarray], session=None) -> list[np.ndarray]:
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  session = session or ort.InferenceSession(path, providers=["CPUExecutionProvider"])
  return session.run(None, {k: np.asarray(batch[k], np.int64) for k in runtime.INPUTS})


def run_torch(model, batch: dict[str, np.ndarray], names) -> list[np.ndarray]:
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    out = model(**{k: torch.from_numpy(np.asarray(batch[k], np.int64)) for k in runtime.INPUTS})
  return [out[n].numpy() for n in names]


def export(model_dir: str, output_dir: str, *, quantize: bool = False,
           bucket_widths: Sequence[int] | None = None) -> dict:
  """Writes the ONNX artifact (built beside `output_dir`, renamed in); returns its
  manifest, with the export's max |onnxruntime - PyTorch| on a check batch."""
  import torch  # pylint: disable=import-outside-toplevel
  if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise ValueError(f"--output_dir={output_dir} exists and is not empty; choose a new one")
  meta = export_artifact.read_model_dir(model_dir)
  task, max_len = meta["task"], int(meta["max_seq_length"])
  widths = export_artifact.check_widths(
      bucket_widths or export_artifact.default_bucket_widths(max_len), max_len)
  model = load_torch_model(model_dir, task)
  names = output_names(task)
  # Written beside, then renamed into place: a crash never leaves half an artifact.
  with fileio.atomic_directory(output_dir) as tmp:
    example = sample_batch(2, min(8, max_len), model.config.vocab_size)
    axes = {k: {0: "batch", 1: "sequence"} for k in runtime.INPUTS}
    axes.update({n: ({0: "batch"} if n == "pooler_output" or task in ("classification",
                                                                       "regression")
                     else {0: "batch", 1: "sequence"}) for n in names})
    torch.onnx.export(_wrapped(model, names),
                      tuple(torch.from_numpy(example[k]) for k in runtime.INPUTS),
                      os.path.join(tmp, MODEL_FILE), input_names=list(runtime.INPUTS),
                      output_names=list(names), dynamic_axes=axes, opset_version=OPSET,
                      dynamo=False)
    check = sample_batch(3, max(3, max_len - 3), model.config.vocab_size, seed=1)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
        run_onnx(os.path.join(tmp, MODEL_FILE), check), run_torch(model, check, names)))
    if diff > 1e-4:
      raise ValueError(f"{model_dir}: the ONNX export differs from PyTorch by {diff:.2e} "
                       "(> 1e-4); not kept")
    files = [MODEL_FILE]
    if quantize:
      from onnxruntime import quantization  # pylint: disable=import-outside-toplevel
      quantization.quantize_dynamic(os.path.join(tmp, MODEL_FILE), os.path.join(tmp, INT8_FILE),
                                    weight_type=quantization.QuantType.QInt8)
      files.append(INT8_FILE)
    export_artifact.copy_tokenizer(model_dir, tmp)
    manifest = export_artifact.make_manifest(model_dir, meta, widths, ("cpu",))
    manifest.update(format="onnx", opset=OPSET, files=files, outputs=list(names),
                    parity_vs_pytorch=diff, torch_version=torch.__version__)
    fileio.write_text_atomic(os.path.join(tmp, runtime.MANIFEST_FILE),
                             json.dumps(manifest, indent=1, ensure_ascii=False))
  return manifest
