"""A CPU-sized modern encoder (L3/H128/A2, GeGLU 256, window 32, global every 3rd): the
quickstart's twin of tiny.py with ModernBERT's architecture and recipe.

  python -m launch.pretrain --config=bert_jax/configs/modernbert_tiny.py --workdir=/tmp/modern-tiny

Like tiny.py, with no --config.data.data_dir it prepares the embedded default corpus with an
8k vocabulary and trains 1000 steps of 16 rows of 64 tokens; here MLM only, 30% masked,
StableAdamW on a warmup-stable-decay schedule. Its parameter count is within 1% of
tiny.py's (see docs/modern_encoder.md for the side-by-side run).
"""
from bert_jax.configs import common


def get_config(variant: str = ""):
  c = common.modern_config("modernbert-tiny")
  c.model.vocab_size = 8192
  c.model.max_position_embeddings = 512
  c.max_seq_length = 64
  c.max_predictions_per_seq = 20  # 30% of 64
  c.global_batch_size = 16
  c.eval_batch_size = 64
  c.num_train_steps = 1000
  c.warmup_steps = 50
  c.learning_rate = 2e-3
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.num_eval_steps = 8
  c.model.dtype = "float32"
  return common.apply_variants(c, variant)
