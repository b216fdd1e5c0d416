"""Parameter-tree helpers, one place: path tables of nested dicts, names, counts.

Nested dicts (parameter trees) go through `flax.traverse_util`; `flatten_with_names`
covers any pytree (TrainStates, Orbax metadata) with one '/'-joined naming.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
from flax import traverse_util


def flatten(tree: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
  """{path tuple: leaf} of a nested dict (boxed or abstract leaves are leaves)."""
  return traverse_util.flatten_dict(tree)


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  """The inverse of `flatten`."""
  return traverse_util.unflatten_dict(dict(flat))


def _key_name(k) -> str:
  for attr in ("name", "key", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def flatten_with_names(tree: Any) -> dict[str, Any]:
  """{'params/bert/...': leaf}: one naming for TrainStates, dicts and Orbax metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def count_params(tree: Any) -> int:
  """Number of scalars in a (possibly boxed or abstract) tree."""
  return sum(math.prod(tuple(getattr(nn.unbox(x), "shape", ()))) for x in jax.tree.leaves(
      tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)))
