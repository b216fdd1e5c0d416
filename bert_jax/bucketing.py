"""Length-bucketed fine-tuning batches: no compute on padding, a bounded set of shapes.

Fine-tuning examples are encoded padded to `max_seq_length`; a set of 20-token sentences at
128 spends most of each step on [PAD]. Here every example goes to the narrowest of a few
fixed widths that holds it (`bucket_widths`: a small, fixed set, so at most that many
shapes compile), batches are cut from one bucket at a time and trimmed to its width. Each
epoch shuffles the examples within each bucket and the order of the batches across buckets,
both drawn from (seed, epoch); evaluation walks buckets in order and puts the outputs back
in input order (`scatter_outputs`). Attention never reaches padding, so a trimmed row gives
the same outputs as the full-width row (up to float summation order).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


def bucket_widths(max_seq_length: int, num_buckets: int = 4, multiple: int = 8) -> tuple[int, ...]:
  """Widths L/2^(k-1), ..., L/4, L/2, L (each rounded up to `multiple`, distinct)."""
  if num_buckets < 1:
    raise ValueError(f"num_buckets={num_buckets} must be >= 1")
  widths = {max_seq_length}
  for k in range(1, num_buckets):
    w = -(-max(max_seq_length >> k, 1) // multiple) * multiple
    widths.add(min(w, max_seq_length))
  return tuple(sorted(widths))


def lengths_of(attention_mask: np.ndarray) -> np.ndarray:
  """Real tokens per row: the last attended position + 1 (int64[N])."""
  mask = np.asarray(attention_mask) > 0
  last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
  return np.where(mask.any(axis=1), last, 0).astype(np.int64)


def assign(lengths: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
  """Index of the narrowest width that holds each length."""
  lengths = np.asarray(lengths)
  if len(lengths) and lengths.max() > widths[-1]:
    raise ValueError(f"an example of {lengths.max()} tokens is wider than the widest bucket "
                     f"({widths[-1]})")
  return np.searchsorted(np.asarray(widths), lengths, side="left")


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
  return np.random.Generator(np.random.Philox(key=[seed, epoch * 1024 + stream]))


def train_plan(lengths: np.ndarray, widths: tuple[int, ...], batch_size: int, seed: int,
               epoch: int) -> list[tuple[int, np.ndarray]]:
  """One epoch's batches as (width, example indices); a bucket's last batch may be short."""
  bucket = assign(lengths, widths)
  batches = []
  for b, width in enumerate(widths):
    members = np.flatnonzero(bucket == b)
    members = members[_rng(seed, epoch, b).permutation(len(members))]
    batches.extend((width, members[i:i + batch_size]) for i in range(0, len(members), batch_size))
  order = _rng(seed, epoch, len(widths)).permutation(len(batches))
  return [batches[i] for i in order]


def eval_plan(lengths: np.ndarray, widths: tuple[int, ...],
              batch_size: int) -> list[tuple[int, np.ndarray]]:
  """Every example once, bucket by bucket in input order within each bucket."""
  bucket = assign(lengths, widths)
  plan = []
  for b, width in enumerate(widths):
    members = np.flatnonzero(bucket == b)
    plan.extend((width, members[i:i + batch_size]) for i in range(0, len(members), batch_size))
  return plan


def num_batches(lengths: np.ndarray, widths: tuple[int, ...], batch_size: int) -> int:
  counts = np.bincount(assign(lengths, widths), minlength=len(widths))
  return int(sum(-(-int(c) // batch_size) for c in counts))


def take(arrays: dict[str, np.ndarray], indices: np.ndarray, width: int,
         max_seq_length: int) -> dict[str, np.ndarray]:
  """Rows `indices` of `arrays`, every per-token field ([N, L, ...]) cut to `width`."""
  out = {}
  for k, v in arrays.items():
    rows = v[indices]
    if rows.ndim >= 2 and v.shape[1] == max_seq_length:
      rows = rows[:, :width]
    out[k] = rows
  return out


def scatter_outputs(pieces: Iterator[tuple[np.ndarray, np.ndarray]], n: int,
                    max_seq_length: int, per_token: bool) -> np.ndarray:
  """Outputs of (indices, outputs) pieces, back in input order. With `per_token`, outputs
  are [n_i, width, ...] and are padded back to `max_seq_length`: integers (tag ids) with 0,
  floats (e.g. QA start/end logits) with -1e9, so that a padded position never wins an
  argmax or a top-k."""
  result = None
  for indices, outputs in pieces:
    outputs = np.asarray(outputs)
    if result is None:
      tail = (max_seq_length,) + outputs.shape[2:] if per_token else outputs.shape[1:]
      fill = -1e9 if per_token and np.issubdtype(outputs.dtype, np.floating) else 0
      result = np.full((n,) + tail, fill, outputs.dtype)
    if per_token:
      result[indices, :outputs.shape[1]] = outputs
    else:
      result[indices] = outputs
  if result is None:
    raise ValueError("scatter_outputs: no outputs")
  return result
