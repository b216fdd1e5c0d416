"""ModernBERT-large (L28/H1024/A16, GeGLU 2624, window 128, a global layer every 3rd):
ModernBERT's phase-1 recipe at the large size.

  python -m launch.pretrain --config=bert_jax/configs/modernbert_large.py --workdir=DIR \\
      --config.data.data_dir=PREPARED_DATA_DIR

CPU smoke run: `--config=bert_jax/configs/modernbert_large.py:tiny`. See docs/modern_encoder.md.
"""
from bert_jax.configs import common


def get_config(variant: str = ""):
  c = common.modern_config("modernbert-large")
  c.model.dtype = "bfloat16"
  c.learning_rate = 5e-4
  return common.apply_variants(c, variant)
