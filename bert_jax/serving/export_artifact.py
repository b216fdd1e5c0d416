"""A fine-tuned model directory (or a pretraining one) -> a StableHLO serving artifact.

The artifact is a directory:

  model.stablehlo     jax.export's serialization of infer(params, input_ids,
                      token_type_ids, attention_mask) -> {"outputs": the model's raw
                      outputs, "predictions": the task's `predict` of them}, with
                      symbolic batch and sequence dimensions ("b", "l"), lowered for each
                      platform asked for (cpu, cuda, tpu; none needs to be present).
  params.npz          the parameters, one array per leaf, in the order the function takes
                      them (flattened: a reader needs no pytree of ours).
  manifest.json       task, labels, max length, bucket widths, metric, text options, the
                      bert-jax and jax versions, the model hash, the platforms (see
                      `runtime.FORMAT_VERSION`).
  tokenizer files     copied from the model directory (vocab.txt / tokenizer.json ...).

`runtime.load` reads it back without Flax or the model code.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import fileio
from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax.finetune import export as finetune_export
from bert_jax.finetune import tasks as tasks_lib
from bert_jax.serving import runtime

ENCODER = "encoder"  # the task name of a pretraining (encoder-only) artifact
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "spiece.model", "sentencepiece.model")
_PRETRAINING = ("BertForPreTraining", "BertModel", "BertForMaskedLM")


def default_bucket_widths(max_seq_length: int) -> tuple[int, ...]:
  """16, 24, 32, 48, 64, 96, 128, ... (two widths a doubling, each at most 1.5x the one
  below) under max_seq_length, and max_seq_length: a row computes at most half again its
  length in padding (SST-2's dev sentences at 64: 17% of the tokens computed, against 30%
  with a quarter, a half and all of max_seq_length), for 2 log2(max_seq_length / 16)
  widths to compile."""
  ladder = [base << k for k in range(max_seq_length.bit_length()) for base in (16, 24)]
  return tuple(sorted({w for w in ladder if w < max_seq_length} | {max_seq_length}))


def read_model_dir(model_dir: str) -> dict:
  """finetune.json of a fine-tuned directory, or {"task": "encoder", ...} for a
  pretraining one; a ValueError for a directory that is neither."""
  meta_path = os.path.join(model_dir, finetune_export.FINETUNE_META)
  config_path = os.path.join(model_dir, interop.CONFIG_NAME)
  if not os.path.isfile(config_path):
    raise ValueError(f"--model_dir={model_dir}: no {interop.CONFIG_NAME}; not a model directory")
  if os.path.isfile(meta_path):
    with open(meta_path) as f:
      try:
        return json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: invalid JSON ({e})") from e
  with open(config_path) as f:
    architectures = json.load(f).get("architectures") or []
  if any(a in _PRETRAINING for a in architectures) or not architectures:
    with open(config_path) as f:
      max_len = json.load(f).get("max_position_embeddings", 512)
    return {"task": ENCODER, "labels": [], "max_seq_length": max_len}
  raise ValueError(f"--model_dir={model_dir}: a {architectures[0]} without its task manifest "
                   f"{finetune_export.FINETUNE_META} (export OUT/best_model of a bert-jax "
                   "fine-tuning run)")


def load_model(model_dir: str, meta: dict):
  """(Flax module, params, task or None) of the directory: the task model with its head,
  or the encoder (BertModel) of a pretraining checkpoint. Always float32."""
  config, params = interop.load_hf(model_dir, dtype="float32")
  if meta["task"] == ENCODER:
    return model_lib.BertModel(config), params["bert"], None
  task = tasks_lib.get(meta["task"])
  num_labels = max(len(meta.get("labels") or []), 1)
  head = task.head_from_hf(interop.read_state_dict(model_dir), num_labels, config.hidden_size)
  if head is None:
    raise ValueError(f"{model_dir}: no {task.head_name} head of {task.num_outputs(num_labels)} "
                     f"outputs for task {task.name}")
  model = task.model(config, num_labels)
  pooled = isinstance(model, model_lib.BertForSequenceClassification)
  bert = dict(params["bert"])
  if not pooled:
    bert.pop("pooler", None)
  return model, {"bert": bert, **head}, task


def inference_fn(model, task):
  """infer(params, input_ids, token_type_ids, attention_mask) -> {"outputs", "predictions"}."""

  def infer(params, input_ids, token_type_ids, attention_mask):
    outputs = model.apply({"params": params}, input_ids, token_type_ids, attention_mask,
                          deterministic=True)
    if task is None:  # the encoder: sequence [B, L, H] and pooled [B, H]
      sequence, pooled = outputs
      return {"outputs": {"sequence_output": sequence, "pooled_output": pooled},
              "predictions": {"pooled_output": pooled}}
    if isinstance(outputs, tuple):
      outputs = list(outputs)  # a list is the pytree node every jax version serializes
    return {"outputs": outputs, "predictions": task.predict(outputs)}

  return infer


def model_hash(model_dir: str) -> str:
  """sha256 over the weight files of the directory (config.json included)."""
  h = hashlib.sha256()
  for name in sorted(os.listdir(model_dir)):
    if name.endswith((".safetensors", ".bin")) or name == interop.CONFIG_NAME:
      with open(os.path.join(model_dir, name), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          h.update(chunk)
  return h.hexdigest()


def _check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
  bad = [p for p in platforms if p not in runtime.PLATFORMS]
  if bad or not platforms:
    raise ValueError(f"--platforms={','.join(platforms)}: expected some of {runtime.PLATFORMS}")
  return tuple(dict.fromkeys(platforms))


def check_widths(widths: Sequence[int], max_len: int) -> tuple[int, ...]:
  widths = tuple(sorted(set(int(w) for w in widths)))
  if not widths or widths[0] < 2 or widths[-1] > max_len:
    raise ValueError(f"--bucket_widths={','.join(map(str, widths))}: need widths in [2, "
                     f"max_seq_length={max_len}]")
  return widths if widths[-1] == max_len else widths + (max_len,)


def export(model_dir: str, output_dir: str, *, platforms: Sequence[str] = ("cpu",),
           bucket_widths: Sequence[int] | None = None) -> dict:
  """Writes the artifact directory (built beside `output_dir`, then renamed in); returns
  its manifest."""
  platforms = _check_platforms(platforms)
  if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise ValueError(f"--output_dir={output_dir} exists and is not empty; choose a new one")
  meta = read_model_dir(model_dir)
  max_len = int(meta["max_seq_length"])
  widths = check_widths(bucket_widths or default_bucket_widths(max_len), max_len)
  model, params, task = load_model(model_dir, meta)
  leaves, treedef = jax.tree.flatten(params)
  infer = inference_fn(model, task)

  def flat_infer(flat_params, input_ids, token_type_ids, attention_mask):
    return infer(jax.tree.unflatten(treedef, flat_params), input_ids, token_type_ids,
                 attention_mask)

  # The sequence dimension is bounded by max_seq_length (<= the position table): the model
  # checks the length against it, which must be decidable for every value of "l".
  b, l = jax.export.symbolic_shape("b, l", constraints=(f"l <= {max_len}",))
  ids = jax.ShapeDtypeStruct((b, l), jnp.int32)
  specs = [jax.ShapeDtypeStruct(np.shape(x), np.float32) for x in leaves]
  exported = jax.export.export(jax.jit(flat_infer), platforms=platforms)(specs, ids, ids, ids)
  manifest = make_manifest(model_dir, meta, widths, platforms)
  # Written beside, then renamed into place: a crash never leaves half an artifact.
  with fileio.atomic_directory(output_dir) as tmp:
    with open(os.path.join(tmp, runtime.MODULE_FILE), "wb") as f:
      f.write(exported.serialize())
    np.savez(os.path.join(tmp, runtime.PARAMS_FILE),
             **{f"p{i:04d}": np.asarray(x, np.float32) for i, x in enumerate(leaves)})
    copy_tokenizer(model_dir, tmp)
    fileio.write_text_atomic(os.path.join(tmp, runtime.MANIFEST_FILE),
                             json.dumps(manifest, indent=1, ensure_ascii=False))
  return manifest


def copy_tokenizer(model_dir: str, directory: str) -> None:
  for name in _TOKENIZER_FILES:
    if os.path.isfile(os.path.join(model_dir, name)):
      shutil.copy(os.path.join(model_dir, name), directory)


def make_manifest(model_dir: str, meta: dict, widths, platforms) -> dict:
  """What an artifact (of either format) says of itself; see the module docstring."""
  task = None if meta["task"] == ENCODER else tasks_lib.get(meta["task"])
  text = {k: v for k, v in meta.items()
          if k not in ("task", "labels", "max_seq_length", "lora_rank", "lora_alpha",
                       "lora_merged")}
  return dict(format_version=runtime.FORMAT_VERSION, format="stablehlo", task=meta["task"],
              labels=list(meta.get("labels") or []), max_seq_length=int(meta["max_seq_length"]),
              bucket_widths=list(widths),
              metric=task.default_metric if task is not None else None,
              per_token_outputs=bool(task is not None and task.per_token_outputs),
              text_options=text, bert_jax_version=_version(), jax_version=jax.__version__,
              model_hash=model_hash(model_dir), platforms=list(platforms),
              inputs=list(runtime.INPUTS))


def _version() -> str:
  try:
    return metadata.version("bert-jax")
  except metadata.PackageNotFoundError:
    return "unknown"
