"""Houlsby adapters <-> a safetensors file in AdapterHub's key layout.

AdapterHub (`adapters`) names a double_seq_bn (Houlsby) adapter's weights
  bert.encoder.layer.{i}.attention.output.adapters.{name}.adapter_down.0.{weight,bias}
  bert.encoder.layer.{i}.attention.output.adapters.{name}.adapter_up.{weight,bias}
and the same under `bert.encoder.layer.{i}.output` for the one after the FFN, with torch
Linear layouts ([out, in]). We write those names and layouts, and beside them
`adapter_config.json` with the double_seq_bn options our adapters compute
(swish, residual before the LayerNorm, the original LayerNorm after).

AdapterHub itself is not tested against these files: adapters 1.3.0 requires
transformers ~= 4.57.6, and this project runs transformers 5. What is tested is the
maths against transformers' BERT (tests/bert_jax/finetune/test_peft.py adds these
bottlenecks to a transformers BertModel through forward hooks and compares logits).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import numpy as np

from bert_jax import fileio
from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import tree as tree_lib

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
NAME = "bert_jax"  # the adapter's name inside the keys
_KEY = re.compile(r"^bert\.encoder\.layer\.(\d+)\.(attention\.output|output)\.adapters\."
                  r"([^.]+)\.(adapter_down\.0|adapter_up)\.(weight|bias)$")
_PROJ = {"down": "adapter_down.0", "up": "adapter_up"}


def to_state_dict(extras: Mapping[str, Any], name: str = NAME) -> dict[str, np.ndarray]:
  """AdapterHub-named torch-layout arrays of our adapter leaves (scanned or not)."""
  out = {}
  for path, x in tree_lib.flatten(interop.unstack_layers(extras)).items():
    # path: bert/encoder/layer_i/(attention/output | output)/adapter/(down | up)/(kernel | bias)
    layer = int(path[2].split("_")[1])
    where = ".".join(path[3:-3])
    x = np.asarray(x, np.float32)
    key = (f"bert.encoder.layer.{layer}.{where}.adapters.{name}.{_PROJ[path[-2]]}."
           f"{'weight' if path[-1] == 'kernel' else 'bias'}")
    out[key] = np.ascontiguousarray(x.T) if path[-1] == "kernel" else x
  return out


def from_state_dict(state: Mapping[str, np.ndarray]) -> dict:
  """Our (unscanned) adapter leaves from AdapterHub-named arrays."""
  flat = {}
  inverse = {v: k for k, v in _PROJ.items()}
  for key, x in state.items():
    match = _KEY.match(key)
    if not match:
      raise ValueError(f"{key}: not a Houlsby adapter weight in AdapterHub's layout")
    layer, where, _, proj, kind = match.groups()
    path = (("bert", "encoder", f"layer_{layer}") + tuple(where.split("."))
            + ("adapter", inverse[proj], "kernel" if kind == "weight" else "bias"))
    flat[path] = np.asarray(x).T if kind == "weight" else np.asarray(x)
  return tree_lib.unflatten(flat)


def save(directory: str, config: model_lib.BertConfig, extras) -> None:
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(directory, exist_ok=True)
  save_file(to_state_dict(extras), os.path.join(directory, WEIGHTS), metadata={"format": "pt"})
  adapter_config = dict(
      name=NAME, architecture="bottleneck", mh_adapter=True, output_adapter=True,
      reduction_factor=config.hidden_size / config.adapter_size, non_linearity="swish",
      original_ln_before=False, original_ln_after=True, residual_before_ln=True,
      ln_before=False, ln_after=False, adapter_size=config.adapter_size,
      hidden_size=config.hidden_size, init_weights="up_zero")
  fileio.write_text_atomic(os.path.join(directory, CONFIG), json.dumps(adapter_config, indent=2))


def load(directory: str) -> dict:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  return from_state_dict(load_file(os.path.join(directory, WEIGHTS)))
