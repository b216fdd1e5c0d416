"""ModernBERT-base (L22/H768/A12, GeGLU 1152, window 128 with a global layer every 3rd,
RoPE theta 160k global / 10k local, vocabulary 50368): ModernBERT's phase-1 recipe.

  python -m launch.pretrain --config=bert_jax/configs/modernbert_base.py --workdir=DIR \\
      --config.data.data_dir=PREPARED_DATA_DIR

MLM only at a 30% masking rate on 1024-token rows (prepare the data with
--pair_mode=none semantics: `config.data.pair_mode` is 'none'), StableAdamW, a
warmup-stable-decay schedule. Context extension (phase 2): a new workdir with
`--config.init_from=PHASE1_WORKDIR --config.max_seq_length=8192` (max_position_embeddings
is 8192 already) and, as ModernBERT does, `--config.model.rope_theta=160000`.
CPU smoke run: `--config=bert_jax/configs/modernbert_base.py:tiny`. See docs/modern_encoder.md.
"""
from bert_jax.configs import common


def get_config(variant: str = ""):
  c = common.modern_config("modernbert-base")
  c.model.dtype = "bfloat16"
  return common.apply_variants(c, variant)
