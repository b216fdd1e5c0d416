"""Picks the pretraining data source a config asks for: where text meets the model.

`config.data.synthetic` -> `bert_jax.synthetic.SyntheticSource` (no text tooling);
otherwise `data_pipeline.pretraining_source` over `config.data.data_dir` (empty: the
quickstart corpus prepared under WORKDIR/data). Both satisfy
`bert_jax.batch.PretrainingSource`; `bert_jax.train.train_and_evaluate` takes either.
A new kind of source goes here (and its implementation in data_pipeline).
"""
from __future__ import annotations

import jax
import ml_collections

from bert_jax import batch as batch_lib
from bert_jax import synthetic


def make_pretraining_source(config: ml_collections.ConfigDict,
                            workdir: str) -> batch_lib.PretrainingSource:
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if config.data.synthetic:
    if config.data.get("packing"):
      raise ValueError("config.data.packing=True packs real instances; it cannot be combined "
                       "with config.data.synthetic=True")
    return synthetic.SyntheticSource.from_config(config, **process)
  # Imported here so that synthetic runs need no text packages.
  from data_pipeline import pretraining_source
  return pretraining_source.from_config(
      config.data, pretraining_source.BatchShapes(
          vocab_size=config.model.vocab_size, max_seq_length=config.max_seq_length,
          max_predictions_per_seq=config.max_predictions_per_seq,
          global_batch_size=config.global_batch_size, eval_batch_size=config.eval_batch_size,
          seed=config.seed), workdir=workdir, **process)
