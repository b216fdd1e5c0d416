"""Prefix-tuning leaves <-> the `peft` library's PREFIX_TUNING adapter directory.

peft keeps every layer's prefixes in one table, `prompt_embeddings` [P, L * 2 * H]: it
views a row as [L * 2, N, D] and hands layer i the key prefix 2i and the value prefix
2i + 1 as that layer's past key / value. We keep `prefix_key` / `prefix_value` [P, N, D]
in each layer's `attention/self`; the two are the same numbers rearranged.

peft 0.21 reads this directory (`PeftModel.from_pretrained`), but with transformers 5
BERT takes no past key / values, so peft refuses to run prefix tuning on BERT ("Model
does not support past key values"); the file is for a BERT that does (transformers 4.x),
and for reloading here (`load`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from bert_jax import fileio
from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import tree as tree_lib

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
KEY = "prompt_embeddings"
# Our task's transformers head class -> peft's task_type.
TASK_TYPES = {"BertForSequenceClassification": "SEQ_CLS",
              "BertForTokenClassification": "TOKEN_CLS",
              "BertForQuestionAnswering": "QUESTION_ANS"}


def _layer_path(i: int, leaf: str) -> tuple[str, ...]:
  return ("bert", "encoder", f"layer_{i}", "attention", "self", leaf)


def to_prompt_embeddings(extras: Mapping[str, Any], num_layers: int) -> np.ndarray:
  """[P, L * 2 * H] from the per-layer prefixes (scanned or not)."""
  flat = tree_lib.flatten(interop.unstack_layers(extras))
  parts = []
  for i in range(num_layers):
    for leaf in ("prefix_key", "prefix_value"):
      x = np.asarray(flat[_layer_path(i, leaf)], np.float32)  # [P, N, D]
      parts.append(x.reshape(x.shape[0], -1))
  return np.concatenate(parts, axis=1)


def from_prompt_embeddings(table: np.ndarray, config: model_lib.BertConfig) -> dict:
  """The per-layer (unscanned) prefix leaves of a peft `prompt_embeddings` table."""
  layers, heads, head_dim = config.num_hidden_layers, config.num_attention_heads, config.head_dim
  if table.ndim != 2 or table.shape[1] != layers * 2 * heads * head_dim:
    raise ValueError(f"{KEY} has shape {table.shape}; a {layers}-layer BERT of width "
                     f"{config.hidden_size} needs [P, {layers * 2 * config.hidden_size}]")
  rows = table.reshape(table.shape[0], layers * 2, heads, head_dim)
  return tree_lib.unflatten({_layer_path(i, leaf): rows[:, 2 * i + j]
                             for i in range(layers)
                             for j, leaf in enumerate(("prefix_key", "prefix_value"))})


def save(directory: str, config: model_lib.BertConfig, extras, architecture: str) -> None:
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(directory, exist_ok=True)
  table = to_prompt_embeddings(extras, config.num_hidden_layers)
  save_file({KEY: table}, os.path.join(directory, WEIGHTS), metadata={"format": "pt"})
  peft_config = dict(
      peft_type="PREFIX_TUNING", task_type=TASK_TYPES.get(architecture),
      num_virtual_tokens=int(table.shape[0]), token_dim=config.hidden_size,
      num_transformer_submodules=1, num_attention_heads=config.num_attention_heads,
      num_layers=config.num_hidden_layers, encoder_hidden_size=config.hidden_size,
      prefix_projection=False, inference_mode=True, base_model_name_or_path=None)
  fileio.write_text_atomic(os.path.join(directory, CONFIG), json.dumps(peft_config, indent=2))


def load(directory: str, config: model_lib.BertConfig) -> dict:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  path = os.path.join(directory, WEIGHTS)
  tensors = load_file(path)
  if KEY not in tensors:
    raise ValueError(f"{path}: no {KEY} tensor (not a peft prefix-tuning adapter)")
  return from_prompt_embeddings(tensors[KEY], config)
