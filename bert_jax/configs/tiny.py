"""BERT-tiny (L2/H128/A2): the quickstart preset.

  python -m launch.pretrain --config=bert_jax/configs/tiny.py --workdir=/tmp/bert-tiny

With no --config.data.data_dir it prepares the embedded default corpus (the installed
Python standard library's docstrings) with an 8k SentencePiece vocabulary, trains
1000 steps of 16 sequences of 64 tokens on the CPU and prints held-out MLM accuracy
beside a unigram baseline. Variants: see `common.py` (e.g. `tiny.py:tiny` for a seconds-long smoke run).
"""
from bert_jax.configs import common


def get_config(variant: str = ""):
  c = common.base_config("tiny")
  # A vocabulary the default corpus can fill; a 30k vocabulary would be mostly
  # unseen pieces for a few MB of text.
  c.model.vocab_size = 8192
  # Sized for a 2-core CPU in a few minutes: short sequences (local context is
  # what a 2-layer model learns first), many small steps rather than few large ones.
  c.max_seq_length = 64
  c.max_predictions_per_seq = 10
  c.global_batch_size = 16
  c.eval_batch_size = 64
  c.num_train_steps = 1000
  c.warmup_steps = 50
  # Small models take a larger step size than BERT-base's 1e-4 (5e-3 stalled at the
  # unigram solution in our runs; 2e-3 did not).
  c.learning_rate = 2e-3
  # A thousand steps over a few MB of text is far from overfitting; dropout would
  # only slow the start.
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_probs_dropout_prob = 0.0
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.num_eval_steps = 8
  return common.apply_variants(c, variant)
