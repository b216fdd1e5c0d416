"""BERT-tiny (L2/H128/A2): the quickstart preset.

  python -m launch.pretrain --config=bert_jax/configs/tiny.py --workdir=/tmp/bert-tiny

With no --config.data_dir it prepares the embedded default corpus (the installed
Python standard library's docstrings) with an 8k SentencePiece vocabulary, trains
on the CPU for a few minutes and prints held-out MLM accuracy beside a unigram
baseline. Variants: see `common.py` (e.g. `tiny.py:tiny` for a seconds-long smoke run).
"""
from bert_jax.configs import common


def get_config(variant: str = ""):
  c = common.base_config("tiny")
  # A vocabulary the default corpus can fill; a 30k vocabulary would be mostly
  # unseen pieces for a few MB of text.
  c.model.vocab_size = 8192
  c.max_seq_length = 128
  c.max_predictions_per_seq = 20
  c.global_batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 1000
  c.warmup_steps = 100
  # Small models take a larger step size than BERT-base's 1e-4.
  c.learning_rate = 1e-3
  c.log_every_steps = 50
  c.eval_every_steps = 250
  c.num_eval_steps = 8
  return common.apply_variants(c, variant)
