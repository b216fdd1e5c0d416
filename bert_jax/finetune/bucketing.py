"""Length-bucketed fine-tuning batches: no compute on padding, a bounded set of shapes.

Fine-tuning examples are encoded padded to `max_seq_length`; a set of 20-token sentences at
128 spends most of each step on [PAD]. Here every example goes to the narrowest of a few
widths that holds it (`bucket_widths`: at most `num_buckets` widths fitted to the data's
lengths, so at most that many shapes compile per data set), batches are cut from one bucket at a time and trimmed to its width. Each
epoch shuffles the examples within each bucket and the order of the batches across buckets,
both drawn from (seed, epoch); evaluation walks buckets in order and puts the outputs back
in input order (`scatter_outputs`). Attention never reaches padding, so a trimmed row gives
the same outputs as the full-width row (up to float summation order).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


def bucket_widths(lengths: np.ndarray, max_seq_length: int, num_buckets: int = 4,
                  multiple: int = 8) -> tuple[int, ...]:
  """The at most `num_buckets` widths (multiples of `multiple`, at most max_seq_length)
  that minimise the tokens computed for these example `lengths`, each example padded to
  the narrowest width that holds it. One bucket is the longest example's width (rounded
  up): every batch at one shape, none of it wider than the data needs.

  Fitted to the data rather than fixed fractions of max_seq_length: on 8-22-token
  sentences at 128 the widths come out (16, 24), not (16, 32, 64, 128); on SQuAD-sized
  windows the widest is the longest window, not 384. An exact dynamic programme over the
  rounded lengths (at most max_seq_length / multiple candidates), so the widths are a
  pure function of the lengths: every process computes the same ones.
  """
  if num_buckets < 1:
    raise ValueError(f"num_buckets={num_buckets} must be >= 1")
  lengths = np.asarray(lengths, np.int64)
  if not len(lengths):
    return (max_seq_length,)
  if lengths.max() > max_seq_length:
    raise ValueError(f"an example of {lengths.max()} tokens is longer than max_seq_length "
                     f"({max_seq_length})")
  rounded = np.minimum(-(-np.maximum(lengths, 1) // multiple) * multiple, max_seq_length)
  candidates, counts = np.unique(rounded, return_counts=True)
  below = np.concatenate([[0], np.cumsum(counts)])  # examples at candidates[:i]
  m, k = len(candidates), min(num_buckets, len(candidates))
  # cost[j][i]: tokens of the examples at candidates[:i] in j buckets, the widest ending
  # at candidates[i - 1]; choice[j][i] the start of that last bucket.
  inf = float("inf")
  cost = [[inf] * (m + 1) for _ in range(k + 1)]
  choice = [[0] * (m + 1) for _ in range(k + 1)]
  cost[0][0] = 0.0
  for j in range(1, k + 1):
    for i in range(1, m + 1):
      for start in range(j - 1, i):
        c = cost[j - 1][start] + int(candidates[i - 1]) * int(below[i] - below[start])
        if c < cost[j][i]:
          cost[j][i], choice[j][i] = c, start
  j = min(range(1, k + 1), key=lambda b: (cost[b][m], b))  # fewest buckets among the best
  widths, i = [], m
  while j:
    widths.append(int(candidates[i - 1]))
    i, j = choice[j][i], j - 1
  return tuple(sorted(widths))


def lengths_of(attention_mask: np.ndarray) -> np.ndarray:
  """Real tokens per row: the last attended position + 1 (int64[N])."""
  mask = np.asarray(attention_mask) > 0
  if mask.ndim > 2:  # [N, L, candidates] (multiple choice): a row is as long as its longest
    mask = mask.any(axis=tuple(range(2, mask.ndim)))
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
