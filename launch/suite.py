r"""Runs a benchmark suite (GLUE or CLUE) from its distributed files; calls
`bert_jax.finetune.suite.run_suite` with the text side's layouts.

  python -m launch.suite --suite=glue --data_dir=glue_data --init_from=HF_BERT_DIR \
      --output_dir=/tmp/glue [--tasks=CoLA,MRPC] [--seeds=0,1,2,3,4] \
      [--learning_rates=5e-5,4e-5,3e-5,2e-5]

Writes OUT/results.md (a leaderboard-style table), OUT/results.json and the
leaderboard submission files in OUT/submission/ (see docs/suites.md). Rerunning the
same command resumes: finished runs and tasks are not rerun. Exit status 2 with one
`error:` line per task that did not run (the others still ran and are in the table).
"""
import sys

from absl import app
from absl import flags
from absl import logging

from bert_jax.finetune import suite as suite_lib
from data_pipeline.finetune import suites
from data_pipeline.finetune import tasks as text_tasks
from launch import cli

_SUITE = flags.DEFINE_enum("suite", None, sorted(suites.SUITES), "The benchmark.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "The suite's folder as distributed: one "
                                "folder per task (GLUE: CoLA/, ...; CLUE: afqmc_public/, ...).")
_INIT_FROM = flags.DEFINE_string("init_from", None, "Hugging Face BERT directory.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where runs, results and submission go.")
_TASKS = flags.DEFINE_list("tasks", None, "Only these tasks (default: all of the suite's).")
_SEEDS = flags.DEFINE_list("seeds", [str(s) for s in suite_lib.DEFAULT_SEEDS],
                           "Seeds per learning rate (the median is over them).")
_LRS = flags.DEFINE_list("learning_rates", [f"{lr:g}" for lr in suite_lib.BERT_LEARNING_RATES],
                         "Learning-rate grid (BERT's).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Training batch size (BERT: 32).")
_EPOCHS = flags.DEFINE_integer("num_epochs", None, "Epochs (default: the task's; 3, QA 2).")
_SEQ = flags.DEFINE_integer("max_seq_length", None, "Tokens per sequence (default: the "
                            "task's; 128, QA 384).")
_BUCKETS = flags.DEFINE_integer("length_buckets", 4, "Batch widths per file (1: no buckets).")
_LORA = flags.DEFINE_integer("lora_rank", 0, "LoRA rank; 0 = full fine-tuning.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.mark_flags_as_required(["suite", "data_dir", "init_from", "output_dir"])


def _numbers(values, kind, flag):
  try:
    return tuple(kind(v) for v in values)
  except ValueError:
    raise ValueError(f"--{flag}={','.join(values)}: not a list of {kind.__name__}s") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  finetune = dict(batch_size=_BATCH.value, num_epochs=_EPOCHS.value,
                  max_seq_length=_SEQ.value, length_buckets=_BUCKETS.value,
                  lora_rank=_LORA.value, dtype=_DTYPE.value)
  cfg = suite_lib.SuiteConfig(
      suite=_SUITE.value, data_dir=_DATA_DIR.value, init_from=_INIT_FROM.value,
      output_dir=_OUTPUT_DIR.value, tasks=tuple(_TASKS.value) if _TASKS.value else None,
      learning_rates=_numbers(_LRS.value, float, "learning_rates"),
      seeds=_numbers(_SEEDS.value, int, "seeds"), finetune=finetune)
  results = suite_lib.run_suite(cfg, suites.get(cfg.suite), text_tasks.make_text_task)
  for task, reason in results["failed"].items():
    print(f"error: {task} did not run: {reason}", file=sys.stderr, flush=True)
  return cli.USER_ERROR if results["failed"] else 0


if __name__ == "__main__":
  cli.run(main)
