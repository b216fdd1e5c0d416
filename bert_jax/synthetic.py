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
  return _stack([_row(rng, seq_len, num_predictions, vocab_size) for _ in range(batch_size)])


def _row(rng: np.random.Generator, seq_len: int, num_predictions: int,
         vocab_size: int) -> dict[str, np.ndarray]:
  if seq_len < 5 or num_predictions < 1 or vocab_size <= FIRST_WORD_ID:
    raise ValueError(f"synthetic_batch: seq_len={seq_len} (>= 5), num_predictions="
                     f"{num_predictions} (>= 1), vocab_size={vocab_size} (> {FIRST_WORD_ID})")
  l, p = seq_len, num_predictions
  input_ids = np.full(l, PAD_ID, np.int32)
  token_type_ids = np.zeros(l, np.int32)
  attention_mask = np.zeros(l, np.int32)
  positions = np.zeros(p, np.int32)
  ids = np.zeros(p, np.int32)
  weights = np.zeros(p, np.float32)
  length = int(rng.integers(max(5, l // 2), l + 1))  # tokens incl. specials
  words = length - 3
  len_a = int(rng.integers(1, words))
  tokens = rng.integers(FIRST_WORD_ID, vocab_size, size=words, dtype=np.int32)
  row = np.concatenate([[CLS_ID], tokens[:len_a], [SEP_ID], tokens[len_a:], [SEP_ID]])
  input_ids[:length] = row
  token_type_ids[len_a + 2:length] = 1
  attention_mask[:length] = 1
  candidates = np.array([j for j in range(length) if row[j] not in (CLS_ID, SEP_ID)])
  n = min(p, max(1, int(round(0.15 * len(candidates)))))
  chosen = np.sort(rng.choice(candidates, size=n, replace=False))
  positions[:n] = chosen
  ids[:n] = row[chosen]
  weights[:n] = 1.0
  input_ids[chosen] = MASK_ID
  return dict(
      input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
      masked_lm_positions=positions, masked_lm_ids=ids, masked_lm_weights=weights,
      next_sentence_labels=np.int32(rng.integers(0, 2)))


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class SyntheticIterator:
  """An endless iterator of this host's rows of synthetic global batches.

  Row r of global batch i is a pure function of (seed, i, r), so the global
  batch is the same whatever the number of processes, like the real loader's,
  and `get_state` / `set_state` resume it exactly.
  """

  def __init__(self, *, batch_size: int, seq_len: int, num_predictions: int, vocab_size: int,
               seed: int = 0, process_index: int = 0, process_count: int = 1):
    if batch_size % process_count:
      raise ValueError(f"synthetic data: global batch {batch_size} is not divisible by the "
                       f"{process_count} processes")
    local = batch_size // process_count
    self._rows = range(process_index * local, (process_index + 1) * local)
    self._args = (seq_len, num_predictions, vocab_size)
    self._seed = seed
    self._index = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rows = [_row(np.random.default_rng((self._seed, self._index, r)), *self._args)
            for r in self._rows]
    self._index += 1
    return _stack(rows)

  def get_state(self) -> dict[str, Any]:
    return {"seed": self._seed, "index": self._index}

  def set_state(self, state: dict[str, Any]) -> None:
    self._seed = int(state["seed"])
    self._index = int(state["index"])


# A seed far from any training stream's: eval batches never repeat training ones.
EVAL_SEED = 10_000_019


class SyntheticSource:
  """A `bert_jax.batch.PretrainingSource` of random contract batches: benchmarks and
  smoke tests on machines without text tooling. Not text, so `tokenizer` is None
  (no unigram baseline) and any vocabulary size >= `vocab_size` fits."""
  tokenizer = None
  description = "synthetic batches"
  checkpoint_meta: dict[str, Any] = {}

  def __init__(self, *, global_batch_size: int, eval_batch_size: int, seq_len: int,
               num_predictions: int, vocab_size: int, seed: int = 0, process_index: int = 0,
               process_count: int = 1):
    self.vocab_size = vocab_size
    self._common = dict(seq_len=seq_len, num_predictions=num_predictions,
                        vocab_size=vocab_size, process_index=process_index,
                        process_count=process_count)
    self._train = dict(batch_size=global_batch_size, seed=seed)
    self._eval = dict(batch_size=eval_batch_size, seed=EVAL_SEED)

  @classmethod
  def from_config(cls, config, process_index: int = 0, process_count: int = 1
                  ) -> "SyntheticSource":
    """Batches of the shapes a pretraining `config` (model side) trains on."""
    return cls(global_batch_size=config.global_batch_size,
               eval_batch_size=config.eval_batch_size, seq_len=config.max_seq_length,
               num_predictions=config.max_predictions_per_seq,
               vocab_size=config.model.vocab_size, seed=config.seed,
               process_index=process_index, process_count=process_count)

  def train_batches(self) -> SyntheticIterator:
    return SyntheticIterator(**self._common, **self._train)

  def eval_batches(self) -> SyntheticIterator:
    return SyntheticIterator(**self._common, **self._eval)
