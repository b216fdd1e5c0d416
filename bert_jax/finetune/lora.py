"""LoRA (Hu et al. 2021) on the attention projections, kept outside the model.

The adapters are a separate tree that mirrors the paths of the kernels they
adapt: for `bert/encoder/layer_i/attention/self/query/kernel` ([H, N, D], or
[layers, H, N, D] when layers are scanned) the adapter holds

  lora_a  [..., H, r]     logical axes (..., embed, lora_rank)
  lora_b  [..., r, N, D]  logical axes (..., lora_rank, heads, kv)

and the effective kernel is W + (alpha / r) * A @ B. B starts at zero, so
training starts from the pretrained function exactly; A starts like PEFT's
(Kaiming-uniform). Because the model itself is untouched, `merge` is both the
forward pass during training (recomputed each step; the cost is H*r*N*D per
adapted matrix, small next to the layer's matmuls) and the export.

`split` / `combine` separate a parameter tree into the part an optimizer
updates and the part it never sees, which is how everything else is frozen:
frozen arrays are not differentiated and have no optimizer state.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import partitioning
from bert_jax import tree as tree_lib

DEFAULT_TARGETS = ("query", "value")


def target_kernels(params: Mapping[str, Any], targets: Sequence[str] = DEFAULT_TARGETS
                   ) -> list[tuple[str, ...]]:
  """Paths of the self-attention kernels named in `targets`, in tree order."""
  paths = []

  def visit(node, path):
    for key, value in node.items():
      here = path + (key,)
      if isinstance(value, Mapping):
        visit(value, here)
      elif (key == "kernel" and len(here) >= 3 and here[-3] == "self"
            and here[-2] in targets):
        paths.append(here)

  visit(params, ())
  return paths


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _shape(x):
  return tuple(getattr(nn.unbox(x), "shape", ()))


def init_adapters(rng: jax.Array, params: Mapping[str, Any], rank: int,
                  targets: Sequence[str] = DEFAULT_TARGETS, dtype=jnp.float32) -> dict:
  """Boxed (LogicallyPartitioned) adapters for `params` (values or shapes).

  Pass it to `partitioning.create_sharded` to build it in place on a mesh.
  """
  if rank <= 0:
    raise ValueError(f"lora_rank={rank}: must be positive")
  paths = target_kernels(params, targets)
  if not paths:
    raise ValueError(f"no self-attention kernels named {list(targets)} in the parameters")
  adapters: dict = {}
  for i, path in enumerate(paths):
    shape = _shape(_get(params, path))
    if len(shape) < 3:
      raise ValueError(f"{'/'.join(path)}: expected an [H, N, D] kernel, got shape {shape}")
    lead, hidden, out = shape[:-3], shape[-3], shape[-2:]
    lead_axes = (partitioning.LAYERS,) * len(lead)
    # PEFT's init of A: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(H), 1/sqrt(H)).
    bound = 1.0 / math.sqrt(hidden)
    a = jax.random.uniform(jax.random.fold_in(rng, i), lead + (hidden, rank), dtype,
                           -bound, bound)
    b = jnp.zeros(lead + (rank,) + out, dtype)
    node = {
        "lora_a": nn.LogicallyPartitioned(
            a, lead_axes + (partitioning.EMBED, partitioning.LORA_RANK)),
        "lora_b": nn.LogicallyPartitioned(
            b, lead_axes + (partitioning.LORA_RANK, partitioning.HEADS, partitioning.KV)),
    }
    _set(adapters, path[:-1], node)
  return adapters


def merge(params: Mapping[str, Any], adapters: Mapping[str, Any], scale: float) -> dict:
  """`params` with W + scale * A @ B at every adapted kernel (a new tree; inputs untouched)."""
  out = _copy_dicts(params)

  def visit(node, path):
    if "lora_a" in node:
      kernel_path = path + ("kernel",)
      try:
        w = _get(params, kernel_path)
      except KeyError:
        raise ValueError(f"adapter {'/'.join(path)} has no kernel in the parameters") from None
      delta = jnp.einsum("...hr,...rnd->...hnd", node["lora_a"], node["lora_b"])
      _set(out, kernel_path, (w + scale * delta).astype(w.dtype))
      return
    for key, value in node.items():
      visit(value, path + (key,))

  visit(adapters, ())
  return out


def _copy_dicts(tree):
  if isinstance(tree, Mapping):
    return {k: _copy_dicts(v) for k, v in tree.items()}
  return tree


def split(params: Mapping[str, Any], trainable: Callable[[tuple[str, ...]], bool]
          ) -> tuple[dict, dict]:
  """(trained, frozen) subtrees of `params` by leaf path; empty branches are pruned.

  Boxed leaves (LogicallyPartitioned) count as leaves.
  """
  leaves = tree_lib.flatten(params)
  return (tree_lib.unflatten({k: v for k, v in leaves.items() if trainable(k)}),
          tree_lib.unflatten({k: v for k, v in leaves.items() if not trainable(k)}))


def combine(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict:
  """Deep union of two trees with disjoint leaves (the inverse of `split`)."""
  leaves_a, leaves_b = tree_lib.flatten(a), tree_lib.flatten(b)
  both = leaves_a.keys() & leaves_b.keys()
  if both:
    raise ValueError(f"parameter {'/'.join(min(both))} is in both trees")
  return tree_lib.unflatten({**leaves_a, **leaves_b})


def assemble(trainable, frozen, lora_scale: float):
  """The model's full parameter tree from the trained and the frozen parts."""
  params = combine(trainable["model"], frozen)
  if "lora" in trainable:
    params = merge(params, trainable["lora"], lora_scale)
  return params
