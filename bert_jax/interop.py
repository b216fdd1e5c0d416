"""Hugging Face BERT <-> bert-jax: parameter trees and config.json, through safetensors.

Our module tree mirrors transformers' `BertForPreTraining`, so a parameter's
name maps to a state-dict key by joining the path with dots and renaming the
leaf (`kernel` -> `weight`, transposed; `embedding` -> `weight`; LayerNorm
`scale` -> `weight`). Attention kernels keep their [H, N, D] / [N, D, H] shape
here and are flattened to transformers' [out, in] matrices there.

No torch is needed to convert: safetensors reads and writes NumPy arrays.
`pytorch_model.bin` checkpoints (older exports) need torch to be read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from absl import logging
import numpy as np

from bert_jax import fileio
from bert_jax import model as model_lib
from bert_jax import tree as tree_lib

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_WEIGHTS_NAME = "pytorch_model.bin"

# config.json fields that are BertConfig fields with the same meaning.
CONFIG_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "hidden_act", "hidden_dropout_prob",
                  "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                  "initializer_range", "layer_norm_eps", "pad_token_id")

# State-dict keys that carry no information of their own: a buffer, and the
# decoder that transformers ties to the word embeddings and `cls.predictions.bias`.
_REDUNDANT_KEYS = ("bert.embeddings.position_ids", "cls.predictions.decoder.weight",
                   "cls.predictions.decoder.bias")


# ----------------------------------------------------------------------------- config


def config_to_hf(config: model_lib.BertConfig) -> dict[str, Any]:
  out = {name: getattr(config, name) for name in CONFIG_FIELDS}
  out.update(architectures=["BertForPreTraining"], model_type="bert",
             position_embedding_type="absolute", torch_dtype="float32", use_cache=True)
  return out


def config_from_hf(hf: Mapping[str, Any], where: str = CONFIG_NAME, **overrides) -> model_lib.BertConfig:
  """BertConfig from a parsed config.json; `overrides` set the run-time fields (dtype, ...)."""
  model_type = hf.get("model_type")
  if model_type != "bert":
    raise ValueError(f"{where}: model_type is {model_type!r}, not 'bert'; this is not a BERT checkpoint")
  pos = hf.get("position_embedding_type", "absolute")
  if pos != "absolute":
    raise ValueError(f"{where}: position_embedding_type {pos!r} is not supported (only 'absolute')")
  missing = [f for f in CONFIG_FIELDS if f not in hf and f != "pad_token_id"]
  if missing:
    raise ValueError(f"{where}: missing field(s) {missing}")
  fields = {f: hf[f] for f in CONFIG_FIELDS if f in hf and hf[f] is not None}
  try:
    return model_lib.BertConfig(**{**fields, **overrides})
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: {e}") from e


# ----------------------------------------------------------------------------- layers


def unstack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
  """Turns a scanned encoder (`encoder/layers`, leading layer axis) into `layer_i` subtrees."""
  bert = params.get("bert", params)
  encoder = bert.get("encoder", {})
  if "layers" not in encoder:
    return dict(params)
  stacked = encoder["layers"]
  depth = _tree_leaves(stacked)[0].shape[0]
  layers = {f"layer_{i}": _tree_map(lambda x, i=i: x[i], stacked) for i in range(depth)}
  new_bert = {**bert, "encoder": layers}
  return {**params, "bert": new_bert} if "bert" in params else new_bert


def stack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
  """The inverse of `unstack_layers`: `layer_i` subtrees -> one `layers` subtree."""
  bert = params.get("bert", params)
  encoder = bert.get("encoder", {})
  if "layers" in encoder or not encoder:
    return dict(params)
  depth = len(encoder)
  per_layer = [encoder[f"layer_{i}"] for i in range(depth)]
  stacked = _tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *per_layer)
  new_bert = {**bert, "encoder": {"layers": stacked}}
  return {**params, "bert": new_bert} if "bert" in params else new_bert


def _tree_map(fn, *trees):
  first = trees[0]
  if isinstance(first, Mapping):
    return {k: _tree_map(fn, *(t[k] for t in trees)) for k in first}
  return fn(*trees)


def _tree_leaves(tree):
  if isinstance(tree, Mapping):
    return [leaf for v in tree.values() for leaf in _tree_leaves(v)]
  return [tree]


# ----------------------------------------------------------------------------- names


def _hf_key(path: tuple[str, ...]) -> str:
  """Our parameter path -> transformers' state-dict key."""
  parts = [re.sub(r"^layer_(\d+)$", r"layer.\1", p) for p in path[:-1]]
  leaf = path[-1]
  if leaf in ("kernel", "embedding", "scale"):
    leaf = "weight"
  return ".".join(parts + [leaf])


def _hf_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """The shape transformers stores our parameter `path` of `shape` in."""
  if path[-1] == "bias":
    return (int(np.prod(shape)),)
  if path[-1] != "kernel":
    return tuple(shape)
  # Kernels are [in..., out...]; transformers' Linear weights are [out, in].
  # Only the attention output projection has two input dims ([N, D, H]).
  n_in = 2 if len(shape) == 3 and path[-2] == "dense" else 1
  return (int(np.prod(shape[n_in:])), int(np.prod(shape[:n_in])))


def _to_hf_array(path: tuple[str, ...], x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  hf_shape = _hf_shape(path, x.shape)
  if path[-1] == "kernel":
    return np.ascontiguousarray(x.reshape(hf_shape[::-1]).T)
  return x.reshape(hf_shape)


def _from_hf_array(path: tuple[str, ...], x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  hf_shape = _hf_shape(path, shape)
  if tuple(x.shape) != hf_shape:
    raise ValueError(
        f"parameter {'/'.join(path)} ({_hf_key(path)}): checkpoint shape {tuple(x.shape)} does not "
        f"match the config's {hf_shape}")
  if path[-1] == "kernel":
    x = x.T
  return np.ascontiguousarray(x.reshape(shape))


# ----------------------------------------------------------------------------- files


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
  """All tensors of a transformers checkpoint directory, as float32 NumPy arrays."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  single = os.path.join(directory, WEIGHTS_NAME)
  index = os.path.join(directory, WEIGHTS_INDEX_NAME)
  torch_bin = os.path.join(directory, PYTORCH_WEIGHTS_NAME)
  if os.path.exists(single):
    tensors = load_file(single)
  elif os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for name in files:
      tensors.update(load_file(os.path.join(directory, name)))
  elif os.path.exists(torch_bin):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ValueError(f"{torch_bin}: reading a PyTorch .bin checkpoint needs torch installed "
                       "(or convert it to model.safetensors)") from e
    state = torch.load(torch_bin, map_location="cpu", weights_only=True)
    tensors = {k: v.float().numpy() for k, v in state.items()}
  else:
    raise ValueError(f"{directory}: no {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or {PYTORCH_WEIGHTS_NAME}")
  return {_modern_name(k): np.asarray(v, dtype=np.float32) for k, v in tensors.items()}


def _modern_name(key: str) -> str:
  # TF-converted checkpoints name LayerNorm parameters gamma / beta.
  return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def _expected_shapes(config: model_lib.BertConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  cfg = config.replace(scan_layers=False)
  abstract = jax.eval_shape(
      lambda: model_lib.BertForPreTraining(cfg).init(jax.random.key(0), **model_lib.dummy_inputs(cfg)))
  return {p: tuple(v.shape) for p, v in tree_lib.flatten(nn.unbox(abstract["params"])).items()}


@dataclasses.dataclass(frozen=True)
class LoadReport:
  """What a checkpoint held, relative to `BertForPreTraining`."""
  directory: str
  encoder_only: bool               # keys had no `bert.` prefix (a bare BertModel)
  absent: tuple[str, ...]          # our parameter groups the checkpoint lacks (e.g. 'cls', 'bert/pooler')
  ignored: tuple[str, ...]         # checkpoint keys that belong to no BERT parameter (task heads, ...)

  def __str__(self):
    lines = [f"loaded {self.directory}" + (" (encoder-only BertModel)" if self.encoder_only else "")]
    if self.absent:
      lines.append(f"  absent from the checkpoint (not loaded, not initialised): {', '.join(self.absent)}")
    if self.ignored:
      lines.append(f"  ignored checkpoint keys: {', '.join(self.ignored)}")
    return "\n".join(lines)


def load_hf(directory: str, *, require_pretraining_heads: bool = False,
            **config_overrides) -> tuple[model_lib.BertConfig, dict[str, Any]]:
  """Reads a transformers BERT directory into (BertConfig, params of NumPy arrays).

  Accepts `BertForPreTraining` checkpoints and encoder-only `BertModel` ones
  (keys without the `bert.` prefix, possibly without a pooler, as
  sentence-embedding models ship). Parts the checkpoint lacks are left out of
  `params` and listed in the logged report, never random-initialised; with
  `require_pretraining_heads=True` their absence is an error. Shapes that do
  not match config.json are errors naming the parameter. `config_overrides`
  set run-time fields (dtype, attention_impl, scan_layers, ...).
  """
  params, report, config = _load(directory, require_pretraining_heads, config_overrides)
  logging.info("%s", report)
  if report.absent or report.ignored:
    logging.warning("%s", report)
  return config, params


def load_hf_with_report(directory: str, **config_overrides):
  """Like `load_hf`, also returning the `LoadReport`."""
  params, report, config = _load(directory, False, config_overrides)
  return config, params, report


def _load(directory, require_heads, config_overrides):
  config_path = os.path.join(directory, CONFIG_NAME)
  if not os.path.isdir(directory):
    raise ValueError(f"{directory}: not a directory (a Hugging Face BERT checkpoint is a directory "
                     f"with {CONFIG_NAME} and {WEIGHTS_NAME})")
  if not os.path.exists(config_path):
    raise ValueError(f"{directory}: no {CONFIG_NAME}; not a Hugging Face checkpoint directory")
  with open(config_path) as f:
    try:
      hf_config = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_path}: invalid JSON ({e})") from e
  config = config_from_hf(hf_config, where=config_path, **config_overrides)
  tensors = read_state_dict(directory)
  encoder_only = not any(k.startswith("bert.") for k in tensors)
  if encoder_only:
    tensors = {("bert." + k if not k.startswith("cls.") else k): v for k, v in tensors.items()}

  expected = _expected_shapes(config)
  flat, absent_keys, mismatched = {}, [], []
  for path, shape in expected.items():
    key = _hf_key(path)
    if key not in tensors:
      absent_keys.append(path)
      continue
    try:
      flat[path] = _from_hf_array(path, tensors[key], shape).astype(config.param_dtype)
    except ValueError as e:
      mismatched.append(str(e))
  if mismatched:
    raise ValueError(f"{directory}: {len(mismatched)} parameter(s) do not match {CONFIG_NAME}:\n  "
                     + "\n  ".join(mismatched))
  absent_groups = sorted({_group(p) for p in absent_keys})
  encoder_missing = [p for p in absent_keys if _group(p) not in ("cls", "bert/pooler")]
  if encoder_missing:
    names = ", ".join(_hf_key(p) for p in encoder_missing[:8])
    raise ValueError(f"{directory}: checkpoint lacks {len(encoder_missing)} encoder parameter(s) the "
                     f"config needs: {names}{' ...' if len(encoder_missing) > 8 else ''}")
  if require_heads and absent_groups:
    raise ValueError(f"{directory}: the pretraining heads were asked for, but the checkpoint lacks "
                     f"{absent_groups}")
  used = {_hf_key(p) for p in flat}
  ignored = tuple(sorted(k for k in tensors if k not in used and k not in _REDUNDANT_KEYS))
  params = tree_lib.unflatten(flat)
  if config.scan_layers:
    params = stack_layers(params)
  report = LoadReport(directory, encoder_only, tuple(absent_groups), ignored)
  return params, report, config


def _group(path: tuple[str, ...]) -> str:
  if path[0] == "cls":
    return "cls"
  if path[:2] == ("bert", "pooler"):
    return "bert/pooler"
  return "/".join(path[:2])


def to_hf_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our (possibly scanned, possibly device-resident) params -> transformers' state dict."""
  params = unstack_layers(_to_numpy(params))
  return {_hf_key(path): _to_hf_array(path, x) for path, x in tree_lib.flatten(params).items()}


def _to_numpy(tree):
  if isinstance(tree, Mapping):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def save_hf(config: model_lib.BertConfig, params: Mapping[str, Any], directory: str) -> None:
  """Writes config.json + model.safetensors that transformers' BertForPreTraining loads as is.

  Files are written under temporary names and renamed, so an interrupted
  export never leaves a directory that looks complete.
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  state = to_hf_state_dict(params)
  for path, shape in _expected_shapes(config).items():
    key = _hf_key(path)
    if key in state and tuple(state[key].shape) != _hf_shape(path, shape):
      raise ValueError(f"parameter {'/'.join(path)}: shape {state[key].shape} does not match the "
                       f"config's {_hf_shape(path, shape)}")
  os.makedirs(directory, exist_ok=True)
  with fileio.atomic_path(os.path.join(directory, WEIGHTS_NAME)) as tmp_weights:
    save_file(state, tmp_weights, metadata={"format": "pt"})
  fileio.write_json_atomic(os.path.join(directory, CONFIG_NAME), config_to_hf(config),
                           indent=2, sort_keys=True)
