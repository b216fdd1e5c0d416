"""What distillation reads inside an encoder: its last hidden states and the last
layer's queries, keys and values, taken with Flax's `capture_intermediates` so that
the model code needs no distillation-specific outputs (and the classic forward is
compiled unchanged when nothing is captured)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax


def apply_with_internals(module: nn.Module, params: Any, *args, config, want_qkv: bool,
                         **kwargs) -> tuple[Any, dict[str, jax.Array]]:
  """(module outputs, {"hidden": [B, L, H], and with want_qkv "query", "key",
  "value": [B, L, H] of the last layer, heads merged}).

  `module` is any of our models with a `bert` (BertModel) submodule; `config` its
  BertConfig; args / kwargs as for `module.apply` (rngs included).
  """
  if want_qkv and config.scan_layers:
    # nn.scan carries only the parameter collection across layers: what a scanned
    # layer sows is not returned. The teacher is always run unscanned (see teacher.py).
    raise ValueError("the MiniLM relation loss reads the last layer's queries, keys and "
                     "values, which a scanned encoder does not expose: set "
                     "--config.model.scan_layers=False for the student")
  last = f"layer_{config.num_hidden_layers - 1}"

  def wanted(mdl: nn.Module, method: str) -> bool:
    if method != "__call__":
      return False
    if mdl.name == "bert":
      return True
    path = mdl.scope.path if mdl.scope is not None else ()
    return want_qkv and mdl.name in ("query", "key", "value") and last in path

  outputs, state = module.apply({"params": params}, *args, capture_intermediates=wanted,
                                mutable=["intermediates"], **kwargs)
  found: dict[str, jax.Array] = {}

  def visit(tree, path):
    for key, value in tree.items():
      if key == "__call__":
        found[path[-1]] = value[0]
      elif isinstance(value, dict):
        visit(value, path + (key,))
  visit(nn.unbox(state["intermediates"]), ())
  internals = {"hidden": found["bert"][0]}
  for name in ("query", "key", "value") if want_qkv else ():
    x = found[name]
    internals[name] = x.reshape(x.shape[:2] + (-1,))
  return outputs, internals
