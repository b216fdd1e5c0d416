"""Packing pretraining instances into shared rows: no compute on padding.

BERT's pair sampling fills a row only when documents are long; on short documents most of
each row is [PAD]. Packing puts several `[CLS] A [SEP] B [SEP]` instances in one row of
`max_seq_length` tokens (Krell et al. 2021, "Efficient sequence packing without
cross-contamination"); the model keeps them apart with per-token instance ids (a
block-diagonal attention mask), positions restarting at 0 and one NSP prediction per
instance from its own [CLS].

Which instances share a row is decided per *window* of `window` consecutive examples of the
epoch's visiting order, by best-fit decreasing on their lengths: the longest instance first,
each into the open row with the least room that still takes it (tokens, predictions and
instance slots), else a new row. A window's rows are then put in an order drawn from (seed,
epoch, row), so that a batch does not hold only the rows of long instances. Everything is a
pure function of (seed, epoch) and the instances' lengths, which are themselves drawn from
(seed, epoch, example): every host packs an epoch identically, and a resumed run finds the
same rows.

Each instance's content (tokens, segments, masked positions and their replacements, NSP
label) is exactly what the unpacked loader makes of it: packing only moves it.
"""
from __future__ import annotations

import bisect
import dataclasses

import numpy as np

from data_pipeline import randomness as rnd

# Shortest instance: [CLS] a [SEP] b [SEP] (pairs) or [CLS] a [SEP] (one segment).
MIN_INSTANCE_TOKENS = {True: 5, False: 3}


def max_instances_for(max_seq_length: int, two_segments: bool = True) -> int:
  """The most instances a row of `max_seq_length` tokens can ever hold."""
  return max_seq_length // MIN_INSTANCE_TOKENS[two_segments]


def prediction_bound(content_tokens: np.ndarray, masked_lm_prob: float,
                     max_predictions: int) -> np.ndarray:
  """An upper bound on the masked predictions of instances of `content_tokens` tokens
  (A + B, without [CLS]/[SEP]): masking.mask_tokens' count with every token maskable."""
  n = np.asarray(content_tokens, np.int64)
  count = np.minimum(max_predictions, np.maximum(1, np.floor(n * masked_lm_prob + 0.5)))
  return np.where(n > 0, count, 0).astype(np.int64)


def best_fit_decreasing(lengths: np.ndarray, predictions: np.ndarray, capacity: int,
                        max_predictions: int, max_instances: int) -> list[list[int]]:
  """Rows (lists of indices into `lengths`, longest first) holding every item once.

  A row takes at most `capacity` tokens, `max_predictions` predictions and
  `max_instances` items. Open rows are kept in buckets by their token room, so an item
  looks at the rooms that fit it, smallest first (a bisect over at most `capacity` values),
  not at every open row.
  """
  lengths = np.asarray(lengths, np.int64)
  predictions = np.asarray(predictions, np.int64)
  if len(lengths) and (lengths.max() > capacity or predictions.max() > max_predictions):
    raise ValueError(f"an instance of {lengths.max()} tokens / {predictions.max()} predictions "
                     f"exceeds a row of {capacity} tokens / {max_predictions} predictions")
  order = np.argsort(-lengths, kind="stable").tolist()
  length_list, pred_list = lengths.tolist(), predictions.tolist()
  rows: list[list[int]] = []
  tokens_left: list[int] = []
  preds_left: list[int] = []
  by_room: dict[int, list[int]] = {}   # token room -> open rows with that room
  rooms: list[int] = []                # sorted keys of by_room
  smallest = min(length_list) if length_list else 0

  def close(room, row):
    by_room[room].remove(row)
    if not by_room[room]:
      del by_room[room]
      rooms.pop(bisect.bisect_left(rooms, room))

  def open_(row):
    room = tokens_left[row]
    if room < smallest or len(rows[row]) >= max_instances:
      return  # Nothing left fits: the row is final.
    if room not in by_room:
      by_room[room] = []
      bisect.insort(rooms, room)
    by_room[room].append(row)

  for item in order:
    n, p = length_list[item], pred_list[item]
    target = -1
    for k in range(bisect.bisect_left(rooms, n), len(rooms)):
      for row in by_room[rooms[k]]:
        if preds_left[row] >= p:
          target = row
          break
      if target >= 0:
        close(rooms[k], target)
        break
    if target < 0:
      target = len(rows)
      rows.append([])
      tokens_left.append(capacity)
      preds_left.append(max_predictions)
    rows[target].append(item)
    tokens_left[target] -= n
    preds_left[target] -= p
    open_(target)
  return rows


@dataclasses.dataclass(frozen=True)
class PackedEpoch:
  """An epoch's rows: row r holds the examples at visiting positions
  order[row_start[r]:row_start[r + 1]]."""
  order: np.ndarray      # int64[N]: positions into the epoch's visiting order
  row_start: np.ndarray  # int64[R + 1]

  @property
  def num_rows(self) -> int:
    return len(self.row_start) - 1

  def members(self, rows: range) -> tuple[np.ndarray, np.ndarray]:
    """(visiting positions of the instances of `rows` in row order, their row within `rows`)."""
    lo, hi = self.row_start[rows.start], self.row_start[rows.stop]
    counts = np.diff(self.row_start[rows.start:rows.stop + 1])
    return self.order[lo:hi], np.repeat(np.arange(len(counts)), counts)


def pack_epoch(lengths: np.ndarray, predictions: np.ndarray, *, seed: int, epoch: int,
               capacity: int, max_predictions: int, max_instances: int,
               window: int) -> PackedEpoch:
  """Packs an epoch whose i-th visited example has `lengths[i]` tokens and at most
  `predictions[i]` predictions, window by window (see the module docstring)."""
  order, starts = [], [0]
  for w, lo in enumerate(range(0, len(lengths), window)):
    rows = best_fit_decreasing(lengths[lo:lo + window], predictions[lo:lo + window], capacity,
                               max_predictions, max_instances)
    # Row order drawn from (seed, epoch, window, row): a window's first rows hold its
    # longest instances.
    shuffle = np.argsort(rnd.uniform(seed, epoch, rnd.PACK_ORDER, w, np.arange(len(rows))),
                         kind="stable")
    for r in shuffle.tolist():
      order.extend(lo + i for i in rows[r])
      starts.append(len(order))
  return PackedEpoch(np.asarray(order, np.int64), np.asarray(starts, np.int64))


def pack_batch(rows_of_instance: np.ndarray, unpacked: dict[str, np.ndarray],
               lengths: np.ndarray, labels: np.ndarray, num_rows: int, max_seq_length: int,
               max_predictions: int, max_instances: int) -> dict[str, np.ndarray]:
  """Moves unpacked instances ([n, W] rows of the contract, W >= every length) into
  `num_rows` packed rows of the contract.

  rows_of_instance: int[n], the packed row of each instance, non-decreasing (instances of
  a row are laid out in the given order). Returns the contract's keys with
  next_sentence_labels [R, K] and the packed keys: position_ids, instance_ids (1..K, 0 =
  padding) [R, L], cls_positions and instance_weights [R, K].
  """
  n, width = unpacked["input_ids"].shape
  row = np.asarray(rows_of_instance, np.int64)
  lengths = np.asarray(lengths, np.int64)
  first_of_row = np.searchsorted(row, np.arange(num_rows))
  slot = np.arange(n) - first_of_row[row]
  ends = np.cumsum(lengths)
  offset = ends - lengths - (ends - lengths)[first_of_row[row]]
  if n and (slot.max() >= max_instances or (offset + lengths).max() > max_seq_length):
    raise ValueError("pack_batch: the rows given overflow max_seq_length or max_instances")

  # Real tokens in row-major order are the instances back to back, in order; so are the
  # used cells of the packed rows: two boolean masks move every key at once.
  src = np.arange(width)[None, :] < lengths[:, None]
  used = np.bincount(row, weights=lengths, minlength=num_rows).astype(np.int64)
  dest = np.arange(max_seq_length)[None, :] < used[:, None]
  out = {}
  for key, values in (("input_ids", unpacked["input_ids"][src]),
                      ("token_type_ids", unpacked["token_type_ids"][src]),
                      ("position_ids", np.broadcast_to(np.arange(width, dtype=np.int32),
                                                       (n, width))[src]),
                      ("instance_ids", np.repeat((slot + 1).astype(np.int32), lengths))):
    out[key] = np.zeros((num_rows, max_seq_length), np.int32)
    out[key][dest] = values
  out["attention_mask"] = dest.astype(np.int32)

  out.update(_pack_predictions(unpacked, row, first_of_row[row], offset, num_rows,
                               max_predictions))

  out["cls_positions"] = np.zeros((num_rows, max_instances), np.int32)
  out["cls_positions"][row, slot] = offset
  out["instance_weights"] = np.zeros((num_rows, max_instances), np.float32)
  out["instance_weights"][row, slot] = 1.0
  out["next_sentence_labels"] = np.zeros((num_rows, max_instances), np.int32)
  out["next_sentence_labels"][row, slot] = labels
  return out


def _pack_predictions(unpacked: dict[str, np.ndarray], row: np.ndarray,
                      row_start: np.ndarray, offset: np.ndarray, num_rows: int,
                      max_predictions: int) -> dict[str, np.ndarray]:
  """The masked-LM keys of the packed rows: each instance's real predictions, shifted by
  its offset, after those of the instances before it in its row (so they stay sorted by
  position). row_start: per instance, the index of its row's first instance."""
  real = unpacked["masked_lm_weights"] > 0
  count = real.sum(axis=1)
  count_ends = np.cumsum(count)
  first_pred = count_ends - count - (count_ends - count)[row_start]
  if len(row) and (first_pred + count).max() > max_predictions:
    raise ValueError("pack_batch: the rows given overflow max_predictions")
  j = np.cumsum(real, axis=1) - 1
  pr = np.broadcast_to(row[:, None], real.shape)[real]
  pc = (first_pred[:, None] + j)[real]
  out = {key: np.zeros((num_rows, max_predictions), dtype) for key, dtype in (
      ("masked_lm_positions", np.int32), ("masked_lm_ids", np.int32),
      ("masked_lm_weights", np.float32))}
  out["masked_lm_positions"][pr, pc] = (unpacked["masked_lm_positions"] + offset[:, None])[real]
  out["masked_lm_ids"][pr, pc] = unpacked["masked_lm_ids"][real]
  out["masked_lm_weights"][pr, pc] = 1.0
  return out
