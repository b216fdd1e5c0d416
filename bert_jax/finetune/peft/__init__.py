"""The parameter-efficient fine-tuning family: which method, what it adds, what it trains.

  none      full fine-tuning: every parameter is trained.
  lora      low-rank updates of the attention query/value kernels (`finetune/lora.py`),
            merged into plain BERT weights on export.
  adapters  Houlsby et al. (2019): a bottleneck (H -> adapter_size -> H, swish, residual,
            the up-projection zero so it starts as the identity) after the attention's
            output projection and after the FFN's, before each residual + LayerNorm
            (`model.BottleneckAdapter`).
  prefix    prefix tuning, P-tuning v2 style (Li & Liang 2021; Liu et al. 2022):
            `prefix_length` trained key and value vectors per layer and head, seen by
            every token; the sequence's padding stays masked (`model.BertSelfAttention`).
  bitfit    Ben Zaken et al. (2022): only the bias terms (LayerNorm's included) train.

Whatever the checkpoint did not provide (the task head; the pooler of an encoder-only
checkpoint) trains under every method. The model side is two BertConfig hooks
(`adapter_size`, `prefix_length`, off by default); the frozen / trained split is
`trainable_rule`; `split_extras` takes the added leaves out of a parameter tree so that the
rest exports as plain BERT (`adapters.py`, `prefix.py` write the added leaves).
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
import json
import os
from typing import Any

from bert_jax import tree as tree_lib
from bert_jax.finetune.peft import adapters
from bert_jax.finetune.peft import prefix

METHODS = ("none", "lora", "adapters", "prefix", "bitfit")
DEFAULT_LORA_RANK = 8  # --peft=lora without --lora_rank
PREFIX_LEAVES = ("prefix_key", "prefix_value")
ADAPTER_SCOPE = "adapter"


def model_options(method: str, adapter_size: int, prefix_length: int) -> dict:
  """The BertConfig fields that add `method`'s modules to the model."""
  if method not in METHODS:
    raise ValueError(f"peft={method!r}: choose one of {METHODS}")
  return dict(adapter_size=adapter_size if method == "adapters" else 0,
              prefix_length=prefix_length if method == "prefix" else 0)


def is_extra(path: tuple[str, ...]) -> bool:
  """Whether a parameter path is one of the leaves adapters / prefix tuning add."""
  return ADAPTER_SCOPE in path or path[-1] in PREFIX_LEAVES


def is_bias(path: tuple[str, ...]) -> bool:
  """BitFit's trained set: every bias (dense layers, LayerNorms, the MLM head's)."""
  return path[-1] == "bias"


def trainable_rule(method: str, loaded: Collection[tuple[str, ...]]
                   ) -> Callable[[tuple[str, ...]], bool]:
  """Which parameter paths train under `method`, given those the checkpoint `loaded`."""
  if method == "none":
    return lambda path: True
  if method == "bitfit":
    return lambda path: path not in loaded or is_bias(path)
  if method in ("lora", "adapters", "prefix"):
    return lambda path: path not in loaded
  raise ValueError(f"peft={method!r}: choose one of {METHODS}")


def split_extras(params: Mapping[str, Any]) -> tuple[dict, dict]:
  """(plain BERT parameters, the adapter / prefix leaves) of a parameter tree."""
  flat = tree_lib.flatten(params)
  return (tree_lib.unflatten({k: v for k, v in flat.items() if not is_extra(k)}),
          tree_lib.unflatten({k: v for k, v in flat.items() if is_extra(k)}))


# Where an export keeps a method's added leaves (a subdirectory of best_model/).
EXTRAS_DIRS = {"adapters": "adapters", "prefix": "prefix"}


def save_extras(directory: str, method: str, config, extras, architecture: str) -> None:
  """Writes `extras` (the added leaves) under `directory`/EXTRAS_DIRS[method]."""
  if method not in EXTRAS_DIRS:
    raise ValueError(f"peft={method} adds no parameters to export, got {len(extras)} groups")
  where = os.path.join(directory, EXTRAS_DIRS[method])
  if method == "adapters":
    adapters.save(where, config, extras)
  else:
    prefix.save(where, config, extras, architecture)


def load_extras(directory: str, method: str, config) -> dict:
  """The added leaves an export of `method` holds under `directory` (unscanned)."""
  where = os.path.join(directory, EXTRAS_DIRS[method])
  if not os.path.isdir(where):
    raise ValueError(f"{directory}: finetune.json says peft={method} but {where} is missing")
  return adapters.load(where) if method == "adapters" else prefix.load(where, config)


def extras_of_checkpoint(directory: str, method: str, config) -> tuple[dict, dict]:
  """(the adapter / prefix leaves, their sizes as FinetuneConfig fields) of `directory`
  when it is an export of ours that has them (finetune.json names its method), else
  ({}, {}). A method other than the run's is a mistake: those leaves would be dropped, or
  absent, silently."""
  meta_path = os.path.join(directory, "finetune.json")
  if not os.path.exists(meta_path):
    return {}, {}
  with open(meta_path) as f:
    meta = json.load(f)
  saved = meta.get("peft")
  if saved not in EXTRAS_DIRS:
    return {}, {}
  if method != saved:
    raise ValueError(f"{directory} was fine-tuned with --peft={saved} (its {EXTRAS_DIRS[saved]}/ "
                     f"holds weights the model needs); pass --peft={saved}, not {method}")
  sizes = {k: int(meta[k]) for k in ("adapter_size", "prefix_length") if meta.get(k)}
  return load_extras(directory, method, config), sizes
