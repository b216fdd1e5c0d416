"""The pretraining data source for prepared shards and for the quickstart corpus.

Satisfies `bert_jax.batch.PretrainingSource` structurally (this package never imports
bert_jax): `tokenizer`, `vocab_size`, `description`, `checkpoint_meta`,
`train_batches()` (a `PretrainingIterator`: get_state / set_state resume it exactly) and
`eval_batches()` (one epoch of the eval split, the same batches every call).

The launcher builds it from `config.data` (`from_config`) and hands it to
`bert_jax.train.train_and_evaluate`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Mapping

from data_pipeline import loader as loader_lib
from data_pipeline.prepare import read_manifest

# The loader settings that `config.data` carries (the rest come from the model side).
DATA_FIELDS = ("masked_lm_prob", "short_seq_prob", "pair_mode", "whole_word_masking",
               "worker_count")
# Training rows only: eval batches stay unpacked, so that runs with and without packing
# are scored on the same held-out batches.
PACKING_FIELDS = ("packing", "packing_max_instances")


@dataclasses.dataclass(frozen=True)
class PreparedSource:
  """Batches from a prepared dataset (`python -m launch.prepare_data` output).

  `train` and `eval` are the loader settings of the two splits; the train stream is
  endless (num_epochs=None), the eval stream one epoch with a fixed seed.
  """
  data_dir: str
  manifest: Mapping[str, Any]
  train: loader_lib.LoaderConfig
  eval: loader_lib.LoaderConfig

  @property
  def tokenizer(self) -> str | None:
    return self.manifest.get("tokenizer")

  @property
  def vocab_size(self) -> int:
    return int(self.manifest["vocab_size"])

  @property
  def description(self) -> str:
    return f"the data in {self.data_dir!r}"

  @property
  def checkpoint_meta(self) -> dict[str, Any]:
    # An export finds the tokenizer files through these.
    return {"data_dir": os.path.abspath(self.data_dir),
            "tokenizer_file": self.manifest.get("tokenizer_file")}

  def train_batches(self) -> loader_lib.PretrainingIterator:
    return loader_lib.make_pretraining_iterator(self.train)

  def eval_batches(self) -> loader_lib.PretrainingIterator:
    return loader_lib.make_pretraining_iterator(self.eval)


def resolve_data_dir(data_dir: str, workdir: str, vocab_size: int) -> str:
  """`data_dir`, checked; empty: the quickstart, the embedded default corpus prepared
  (or reused) under WORKDIR/data with a `vocab_size`-piece SentencePiece vocabulary."""
  if not data_dir:
    from data_pipeline import quickstart  # only the quickstart needs sentencepiece
    out = os.path.join(workdir, "data")
    print(f"no --config.data_dir: preparing the default corpus under {out}", file=sys.stderr,
          flush=True)
    return quickstart.prepare_default_dataset(out, vocab_size=vocab_size)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(
        f"--config.data_dir (config.data.data_dir)={data_dir!r} does not exist; prepare one "
        f"with `python -m launch.prepare_data`, or leave it empty for the default corpus")
  return data_dir


@dataclasses.dataclass(frozen=True)
class BatchShapes:
  """What the model side fixes for the batches (`config.model.vocab_size`,
  `config.max_seq_length`, ...): the quickstart's vocabulary size, row length, predictions
  per row, the global train / eval batch sizes, and the seed."""
  vocab_size: int
  max_seq_length: int
  max_predictions_per_seq: int
  global_batch_size: int
  eval_batch_size: int
  seed: int


def from_config(data: Mapping[str, Any], shapes: BatchShapes, *, workdir: str,
                process_index: int = 0, process_count: int = 1) -> PreparedSource:
  """The source `config.data` describes (its `data_dir` and the DATA_FIELDS), making
  batches of the model's `shapes`. The quickstart trains a tokenizer of the model's
  vocabulary size. The process index/count say which rows of each global batch this
  host makes."""
  data_dir = resolve_data_dir(str(data["data_dir"]), workdir, shapes.vocab_size)
  manifest = read_manifest(data_dir)
  common = dict(data_dir=data_dir, process_index=process_index, process_count=process_count,
                max_seq_length=shapes.max_seq_length,
                max_predictions_per_seq=shapes.max_predictions_per_seq, seed=shapes.seed,
                drop_remainder=True, **{k: data[k] for k in DATA_FIELDS})
  return PreparedSource(
      data_dir=data_dir, manifest=manifest,
      train=loader_lib.LoaderConfig(split="train", global_batch_size=shapes.global_batch_size,
                                    num_epochs=None, **common,
                                    **{k: data[k] for k in PACKING_FIELDS if k in data}),
      eval=loader_lib.LoaderConfig(split="eval", global_batch_size=shapes.eval_batch_size,
                                   num_epochs=1, **common))
