"""BERT-base (L12/H768/A12) pretraining, BERT's phase-1 recipe (seq 128, 20 predictions).

  python -m launch.pretrain --config=bert_jax/configs/base.py --workdir=DIR \
      --config.data.data_dir=PREPARED_DATA_DIR

CPU smoke run: `--config=bert_jax/configs/base.py:tiny`. Variants: see `common.py`.
"""
from bert_jax.configs import common


def get_config(variant: str = ""):
  c = common.base_config("base")
  c.global_batch_size = 256
  c.eval_batch_size = 256
  c.learning_rate = 1e-4
  c.model.dtype = "bfloat16"
  return common.apply_variants(c, variant)
