"""Random batches that honour the batch contract, with no text tooling.

For benchmarks on machines that have only bert_jax's core dependencies and for
tests of the training loop. Content is random, so a model learns nothing beyond
the token distribution; shapes, dtypes, padding and the [CLS]/[SEP] layout are
those of real batches.
"""
from __future__ import annotations

from typing import Any

import numpy as np

# Special ids of the synthetic vocabulary (BERT's WordPiece order).
PAD_ID, CLS_ID, SEP_ID, MASK_ID = 0, 2, 3, 4
FIRST_WORD_ID = 5


def synthetic_batch(rng: np.random.Generator, batch_size: int, seq_len: int,
                    num_predictions: int, vocab_size: int) -> dict[str, np.ndarray]:
  """One host batch: `[CLS] A [SEP] B [SEP] [PAD]...` with up to `num_predictions`
  masked positions per row (some rows padded, as short sequences are in real data)."""
  if seq_len < 5 or num_predictions < 1 or vocab_size <= FIRST_WORD_ID:
    raise ValueError(f"synthetic_batch: seq_len={seq_len} (>= 5), num_predictions="
                     f"{num_predictions} (>= 1), vocab_size={vocab_size} (> {FIRST_WORD_ID})")
  b, l, p = batch_size, seq_len, num_predictions
  input_ids = np.full((b, l), PAD_ID, np.int32)
  token_type_ids = np.zeros((b, l), np.int32)
  attention_mask = np.zeros((b, l), np.int32)
  positions = np.zeros((b, p), np.int32)
  ids = np.zeros((b, p), np.int32)
  weights = np.zeros((b, p), np.float32)
  for i in range(b):
    length = int(rng.integers(max(5, l // 2), l + 1))  # tokens incl. specials
    words = length - 3
    len_a = int(rng.integers(1, words))
    tokens = rng.integers(FIRST_WORD_ID, vocab_size, size=words, dtype=np.int32)
    row = np.concatenate([[CLS_ID], tokens[:len_a], [SEP_ID], tokens[len_a:], [SEP_ID]])
    input_ids[i, :length] = row
    token_type_ids[i, len_a + 2:length] = 1
    attention_mask[i, :length] = 1
    candidates = np.array([j for j in range(length) if row[j] not in (CLS_ID, SEP_ID)])
    n = min(p, max(1, int(round(0.15 * len(candidates)))))
    chosen = np.sort(rng.choice(candidates, size=n, replace=False))
    positions[i, :n] = chosen
    ids[i, :n] = row[chosen]
    weights[i, :n] = 1.0
    input_ids[i, chosen] = MASK_ID
  return dict(
      input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
      masked_lm_positions=positions, masked_lm_ids=ids, masked_lm_weights=weights,
      next_sentence_labels=rng.integers(0, 2, size=b).astype(np.int32))


class SyntheticIterator:
  """An endless iterator of synthetic batches; batch i is a pure function of
  (seed, i), and `get_state` / `set_state` resume it exactly like the real loader."""

  def __init__(self, *, batch_size: int, seq_len: int, num_predictions: int, vocab_size: int,
               seed: int = 0):
    self._args = (batch_size, seq_len, num_predictions, vocab_size)
    self._seed = seed
    self._index = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self._seed, self._index))
    self._index += 1
    return synthetic_batch(rng, *self._args)

  def get_state(self) -> dict[str, Any]:
    return {"seed": self._seed, "index": self._index}

  def set_state(self, state: dict[str, Any]) -> None:
    self._seed = int(state["seed"])
    self._index = int(state["index"])
