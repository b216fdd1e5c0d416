r"""Times training steps on synthetic batches; prints one JSON line.

  python -m launch.benchmark --config=bert_jax/configs/base.py --batch_size=256 \
      --max_seq_length=128 --steps=20

Needs only bert_jax's core dependencies (no text pipeline). Config fields can be
overridden as in launch.pretrain (`--config.model.dtype=float32`, ...).
"""
import json

from absl import app
from absl import flags
from ml_collections import config_flags

from bert_jax import benchmark
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch (default: the config's).")
_SEQ = flags.DEFINE_integer("max_seq_length", None, "Sequence length (default: the config's).")
_PRED = flags.DEFINE_integer(
    "num_predictions", None, "Masked positions per sequence (default: the config's, or "
    "0.15 x max_seq_length rounded up when --max_seq_length is given).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 2, "Untimed steps first (compilation).")
_DISTILL = flags.DEFINE_bool(
    "distill", False, "General distillation's cost (needs --config.distill.teacher): the "
    "distillation step with the teacher in float32 and bfloat16, a plain student step and "
    "the teacher's forward alone; one JSON line each, then a table.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if _BATCH.value is not None:
    config.global_batch_size = _BATCH.value
  if _SEQ.value is not None:
    config.max_seq_length = _SEQ.value
    config.max_predictions_per_seq = -(-15 * _SEQ.value // 100)
    config.model.max_position_embeddings = max(config.model.max_position_embeddings, _SEQ.value)
  if _PRED.value is not None:
    config.max_predictions_per_seq = _PRED.value
  if _DISTILL.value:
    rows = benchmark.distillation(config, steps=_STEPS.value)
    for row in rows:
      print(json.dumps(row), flush=True)
    print(benchmark.distillation_table(rows), flush=True)
    return
  print(json.dumps(benchmark.run(config, steps=_STEPS.value, warmup_steps=_WARMUP.value)),
        flush=True)


if __name__ == "__main__":
  cli.run(main)
