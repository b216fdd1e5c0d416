"""The batch contract and the data-source protocol: where text meets the model.

This is the only thing `bert_jax` and the text package share. The text package never
imports it (it satisfies the protocol structurally, by duck typing); tests check that
its batches carry exactly these keys. Pure Python: importing it needs neither jax nor
any text tooling.

Pretraining batch (host-local NumPy; B rows of this host, L = max_seq_length,
P = max_predictions_per_seq):

  input_ids             [B, L] int32   [CLS] A [SEP] B [SEP] [PAD]..., masked tokens replaced
  token_type_ids        [B, L] int32   0 for [CLS], A and its [SEP]; 1 for B and its [SEP]
  attention_mask        [B, L] int32   1 real token, 0 padding
  masked_lm_positions   [B, P] int32   positions of the predicted tokens, 0-padded
  masked_lm_ids         [B, P] int32   original ids at those positions
  masked_lm_weights     [B, P] float32 1.0 real prediction, 0.0 padding
  next_sentence_labels  [B]    int32   0 = B follows A, 1 = B is random (BERT's convention)

Packed pretraining batch (several instances per row; K = packing_max_instances): the keys
above plus

  position_ids          [B, L] int32   position within the token's own instance (from 0)
  instance_ids          [B, L] int32   1..K: the token's instance in its row; 0 padding
  cls_positions         [B, K] int32   each instance's [CLS] position; 0 for empty slots
  instance_weights      [B, K] float32 1.0 real instance, 0.0 empty slot

with next_sentence_labels [B, K] (one per slot) and attention_mask = instance_ids > 0.
A batch without instance_ids is unpacked.

Fine-tuning batch: the three input keys plus `labels` ([B] int32 class ids, [B]
float32 regression targets, or [B, L] int32 token tags with IGNORE_INDEX where no
tag is predicted); a task may add keys of its own (see `bert_jax.finetune.tasks`). Extractive
QA rows are context windows, several per question, with `start_positions` and
`end_positions` ([B] int32; 0 = [CLS]: the answer is not in this window / there is
none) and `label_weights` ([B] float32; 0 for windows not to train on) instead of
`labels` (QA_KEYS).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
PRETRAINING_KEYS = INPUT_KEYS + ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
                                 "next_sentence_labels")
PACKED_KEYS = ("position_ids", "instance_ids", "cls_positions", "instance_weights")
FINETUNING_KEYS = INPUT_KEYS + ("labels",)
QA_KEYS = INPUT_KEYS + ("start_positions", "end_positions", "label_weights")

# Label of a position that predicts nothing (sub-tokens after a word's first,
# specials, padding): PyTorch's and transformers' cross-entropy ignore_index.
IGNORE_INDEX = -100

HostBatch = Mapping[str, np.ndarray]


def pretraining_arrays(batch: HostBatch) -> dict[str, np.ndarray]:
  """The contract's arrays of `batch`, packed keys included when it is packed (a source
  may carry extra keys, e.g. for statistics); a missing key is named."""
  keys = PRETRAINING_KEYS + (PACKED_KEYS if "instance_ids" in batch else ())
  missing = [k for k in keys if k not in batch]
  if missing:
    raise KeyError(f"pretraining batch lacks {missing}; it has {sorted(batch)}")
  return {k: batch[k] for k in keys}


@runtime_checkable
class BatchIterator(Protocol):
  """Endless (training) or finite (eval) host batches with an exact resume point."""

  def __iter__(self) -> Iterator[HostBatch]: ...

  def __next__(self) -> HostBatch: ...

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position; `set_state` on a fresh iterator resumes exactly there."""

  def set_state(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class PretrainingSource(Protocol):
  """What the pretraining loop is handed (`train.train_and_evaluate(config, workdir,
  source)`). Implementations: the text package's `pretraining_source` (prepared shards,
  the quickstart corpus) and `bert_jax.synthetic.SyntheticSource` (random batches).

  Attributes:
    tokenizer: identity of the tokenizer the ids come from (e.g. its fingerprint), or
      None for data that is not text (synthetic). A checkpoint records it; resuming
      with another tokenizer is refused. Text sources also get the unigram baseline.
    vocab_size: number of ids the data uses (the model's table must hold them), or
      None when any table size will do.
    description: a few words for messages, e.g. "prepared data in '/data/wiki'".
    checkpoint_meta: JSON-able facts a checkpoint keeps so that an export can find
      the tokenizer files (e.g. data_dir, tokenizer_file).
  """
  tokenizer: str | None
  vocab_size: int | None
  description: str
  checkpoint_meta: Mapping[str, Any]

  def train_batches(self) -> BatchIterator:
    """This host's rows of the global training batches, from the start of the stream
    (a resumed run calls `set_state` on it)."""

  def eval_batches(self) -> Iterator[HostBatch]:
    """The same held-out batches every time it is called."""
