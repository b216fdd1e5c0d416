"""BERT-mini (L4/H256/A4) pretraining, BERT's phase-1 recipe (seq 128, 20 predictions).

  python -m launch.pretrain --config=bert_jax/configs/mini.py --workdir=DIR \
      --config.data.data_dir=PREPARED_DATA_DIR

CPU smoke run: `--config=bert_jax/configs/mini.py:tiny`. Variants: see `common.py`.
"""
from bert_jax.configs import common


def get_config(variant: str = ""):
  c = common.base_config("mini")
  c.global_batch_size = 128
  c.eval_batch_size = 128
  c.learning_rate = 5e-4
  c.model.dtype = "float32"
  return common.apply_variants(c, variant)
