r"""Pretrains BERT (MLM + NSP): parses the config, calls `train.train_and_evaluate`.

  python -m launch.pretrain --config=bert_jax/configs/tiny.py --workdir=/tmp/bert-tiny
  python -m launch.pretrain --config=bert_jax/configs/base.py --workdir=DIR \
      --config.data.data_dir=PREPARED_DIR --config.num_train_steps=100000

The config is locked: an override of a field that does not exist is an error. Data
fields live under `config.data` (`--config.data.data_dir=`); an old top-level name
(`--config.data_dir=`, see `bert_jax/configs/common.py` FORMER_NAMES) is an error that
names the new field.
"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bert_jax import train
from launch import cli
from launch import distributed_flags
from launch import sources

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. bert_jax/configs/tiny.py[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics, event files and data go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  distributed_flags.initialize()
  config, workdir = _CONFIG.value, _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  summary = train.train_and_evaluate(config, workdir,
                                     sources.make_pretraining_source(config, workdir))
  if "eval_mlm_accuracy" in summary:
    line = f"held-out MLM accuracy {summary['eval_mlm_accuracy']:.4f}"
    if "unigram_mlm_accuracy" in summary:
      line += (f" vs unigram baseline {summary['unigram_mlm_accuracy']:.4f}; MLM loss "
               f"{summary['eval_mlm_loss']:.4f} vs {summary['unigram_mlm_loss']:.4f}")
    print(line, flush=True)
  print(f"metrics: {_WORKDIR.value}/metrics.jsonl, curves: {_WORKDIR.value}/curves.png",
        flush=True)


if __name__ == "__main__":
  cli.run(main)
