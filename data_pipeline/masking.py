"""Dynamic masked-LM selection for a whole batch at once (BERT's
create_masked_lm_predictions, vectorised).

Per row: `num_to_predict = min(max_predictions, max(1, round(maskable * masked_lm_prob)))`
(0 when nothing is maskable), where maskable = real tokens that are not [PAD] [UNK] [CLS]
[SEP] [MASK]. The chosen positions are a uniformly random subset; each becomes [MASK] with
probability 0.8, a random non-special token with 0.1, or stays with 0.1. With whole-word
masking, words (a word-start token and its continuations) are taken in random order while
they fit in `num_to_predict`; like BERT, a word is never split, and (unlike BERT, which
skips a word that does not fit and tries the next) selection stops at the first word that
does not fit, so the count can fall a little short of `num_to_predict`. Word starts come
from the tokenizer's per-id table, or, for text segmented into words at prepare time
(Chinese whole-word masking), from per-position flags.
Every draw is keyed on (seed, epoch, example key, position): masks differ between epochs
and do not depend on batch composition.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data_pipeline import randomness as rnd


@dataclasses.dataclass(frozen=True)
class MaskingTables:
  special: np.ndarray      # bool[vocab]: never masked, never used as a replacement
  word_start: np.ndarray   # bool[vocab]: token begins a word (whole-word masking)
  replacements: np.ndarray # int32[...]: the non-special ids a random replacement draws from
  mask_id: int

  @classmethod
  def create(cls, vocab_size: int, special_ids, word_start: np.ndarray, mask_id: int):
    special = np.zeros(vocab_size, dtype=bool)
    special[list(special_ids)] = True
    return cls(special, np.asarray(word_start, dtype=bool),
               np.flatnonzero(~special).astype(np.int32), int(mask_id))


@dataclasses.dataclass(frozen=True)
class MaskingRule:
  """How many tokens a row predicts, and whether whole words are masked together."""
  masked_lm_prob: float
  max_predictions: int
  whole_word: bool = False


def mask_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, keys: np.ndarray,
                tables: MaskingTables, seed: int, epoch: int, rule: MaskingRule,
                word_start: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """-> masked input_ids [n, L] and masked_lm_positions/ids/weights [n, P].

  `keys` (int64[n]) identify the examples; the input is not modified. `word_start`
  (bool [n, L], optional) marks the positions that begin a word, in place of
  `tables.word_start[input_ids]`.
  """
  length = input_ids.shape[1]
  keys = np.asarray(keys, dtype=np.int64)[:, None]
  draw = lambda stream, index: rnd.uniform(seed, epoch, stream, keys, index)  # noqa: E731
  maskable = ~tables.special[input_ids] & (attention_mask > 0)
  num_maskable = maskable.sum(axis=1)
  num_to_predict = np.minimum(
      rule.max_predictions,
      np.maximum(1, np.floor(num_maskable * rule.masked_lm_prob + 0.5))).astype(np.int64)
  num_to_predict = np.where(num_maskable > 0, num_to_predict, 0)
  slots = min(rule.max_predictions, length)
  if rule.whole_word:
    starts = tables.word_start[input_ids] if word_start is None else word_start
    chosen = _whole_words(maskable, starts, num_to_predict, draw)
    candidate = np.where(chosen, np.arange(length)[None, :], length)
  else:
    candidate = _single_tokens(maskable, num_to_predict, slots, draw)
  # Positions in increasing order, padded with 0 (BERT sorts its predictions by position).
  positions = np.sort(candidate, axis=1)[:, :slots]
  weights = positions < length
  positions = np.where(weights, positions, 0)
  if slots < rule.max_predictions:
    pad = rule.max_predictions - slots
    positions = np.pad(positions, ((0, 0), (0, pad)))
    weights = np.pad(weights, ((0, 0), (0, pad)))
  return _replace(input_ids, positions, weights, tables, draw)


def _single_tokens(maskable, num_to_predict, slots: int, draw) -> np.ndarray:
  """[n, slots] the chosen positions (the num_to_predict smallest scores), `length` in the
  unused slots."""
  length = maskable.shape[1]
  pos = np.arange(length)[None, :]
  score = np.where(maskable, draw(rnd.MASK_SELECT, pos), 2.0)
  # Partition out the best `slots`, then order them.
  best = (np.argpartition(score, slots - 1, axis=1)[:, :slots] if slots < length
          else np.broadcast_to(pos, score.shape))
  best = np.take_along_axis(best, np.argsort(np.take_along_axis(score, best, 1), 1), 1)
  return np.where(np.arange(slots)[None, :] < num_to_predict[:, None], best, length)


def _whole_words(maskable, starts, num_to_predict, draw) -> np.ndarray:
  """bool [n, L]: the tokens of the words taken, in random word order, while they fit."""
  n, length = maskable.shape
  rows = np.arange(n)[:, None]
  pos = np.arange(length)[None, :]
  # A word starts at a word-start token or right after an unmaskable one (a front
  # truncation can leave a continuation right after [CLS] or [SEP]).
  prev_unmaskable = np.ones_like(maskable)
  prev_unmaskable[:, 1:] = ~maskable[:, :-1]
  starts = starts | ~maskable | prev_unmaskable
  word = np.cumsum(starts, axis=1) - 1
  score = np.where(maskable, draw(rnd.MASK_WORD, word), 2.0)
  order = np.argsort(score, axis=1, kind="stable")  # Words stay contiguous, in order.
  sorted_word = word[rows, order]
  sorted_ok = maskable[rows, order]
  last = np.ones_like(sorted_ok)
  last[:, :-1] = sorted_word[:, 1:] != sorted_word[:, :-1]
  # For each token, the running count at the end of its word.
  end_index = np.where(last, pos, length)
  end_index = np.flip(np.minimum.accumulate(np.flip(end_index, 1), axis=1), 1)
  running = np.cumsum(sorted_ok, axis=1)
  chosen_sorted = sorted_ok & (running[rows, end_index] <= num_to_predict[:, None])
  chosen = np.zeros_like(maskable)
  chosen[rows, order] = chosen_sorted
  return chosen


def _replace(input_ids, positions, weights, tables: MaskingTables, draw) -> dict:
  """BERT's 80/10/10 at the chosen positions: [MASK], a random token, or the original."""
  rows = np.arange(input_ids.shape[0])[:, None]
  original = input_ids[rows, positions]
  action = draw(rnd.MASK_ACTION, positions)
  pick = draw(rnd.MASK_REPLACEMENT, positions)
  random_ids = tables.replacements[
      np.minimum((pick * len(tables.replacements)).astype(np.int64),
                 len(tables.replacements) - 1)]
  new = np.where(action < 0.8, tables.mask_id, np.where(action < 0.9, random_ids, original))
  masked = input_ids.copy()
  # Padding slots point at position 0 ([CLS]); only real slots write.
  r_idx, s_idx = np.nonzero(weights)
  masked[r_idx, positions[r_idx, s_idx]] = new[r_idx, s_idx]
  return {
      "input_ids": masked.astype(np.int32),
      "masked_lm_positions": positions.astype(np.int32),
      "masked_lm_ids": np.where(weights, original, 0).astype(np.int32),
      "masked_lm_weights": weights.astype(np.float32),
  }
