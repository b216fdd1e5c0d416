r"""QA at equal budget: one checkpoint fine-tuned for extractive QA by bert-jax and by
transformers' PyTorch model, same data and recipe, several seeds a side; EM / F1 per seed
and each side's mean and standard deviation.

  python -m launch.benchmark_qa_parity --init_from=HF_BERT_DIR --train_file=train.json \
      --eval_file=dev.json --workdir=/tmp/qa_parity [--seeds=0,1,2] [--num_epochs=2] \
      [--learning_rate=3e-5] [--batch_size=32] [--max_seq_length=384] [--doc_stride=128] \
      [--sides=ours,transformers] [--length_buckets=0] [--max_query_length=64]

ours          `bert_jax.finetune` in this process (what `python -m launch.finetune --task=qa`
              runs), trained without an eval file (so the last epoch's model is kept, as on
              the other side), then that model predicts the eval file;
transformers  `BertForQuestionAnswering` with `Trainer`, run_qa's windows, labels and
              post-processing, and our optimiser (bert_jax/finetune/qa_reference.py).
Both sides' predictions are scored by the official SQuAD v1.1 rules
(`qa_metrics.squad_v1_evaluate`). Runs alternate sides seed by seed, so that a change in
the machine's load falls on both. Each run writes WORKDIR/<side>_seed<N>/result.json; a run
whose result.json exists with the same recipe is not repeated (add seeds to a table by
running again). Prints one JSON line per run, then the table; writes WORKDIR/qa_parity.json.
transformers, torch and accelerate are needed for the transformers side only.
"""
import dataclasses
import json
import os
import time

from absl import app
from absl import flags

from bert_jax import fileio
from bert_jax.finetune import config as finetune_config
from bert_jax.finetune import loop as finetune
from bert_jax.finetune import qa_metrics
from bert_jax.finetune import qa_reference
from data_pipeline.finetune import tasks as text_tasks
from launch import cli

_INIT = flags.DEFINE_string("init_from", None, "transformers BERT directory (config.json, "
                            "weights, vocab.txt) both sides start from.")
_TRAIN = flags.DEFINE_string("train_file", None, "SQuAD v1.1-format training JSON.")
_EVAL = flags.DEFINE_string("eval_file", None, "SQuAD v1.1-format JSON to score.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and qa_parity.json go.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, each run on every side.")
_EPOCHS = flags.DEFINE_integer("num_epochs", 2, "Training epochs.")
_LR = flags.DEFINE_float("learning_rate", 3e-5, "Peak learning rate.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Training batch size.")
_LEN = flags.DEFINE_integer("max_seq_length", 384, "Window length in tokens.")
_STRIDE = flags.DEFINE_integer("doc_stride", 128, "Ours: tokens between window starts; "
                               "transformers: run_qa's --doc_stride (the windows' overlap).")
_SIDES = flags.DEFINE_list("sides", list(qa_reference.SIDES), "Which side(s) to run.")
_BUCKETS = flags.DEFINE_integer("length_buckets", 0, "Ours: --length_buckets (0: chosen by "
                                "the cost model; 1: every batch max_seq_length wide).")
_QUERY = flags.DEFINE_integer("max_query_length", 64, "Ours: question tokens kept (BERT's "
                              "run_squad; run_qa keeps the whole question).")
flags.mark_flags_as_required(["init_from", "train_file", "eval_file", "workdir"])


def _ours(recipe, seed, out):
  """Trains without an eval file (the last epoch's model is kept), then predicts the eval
  file with that model."""
  base = finetune_config.FinetuneConfig(
      task="qa", init_from=_INIT.value, output_dir=os.path.join(out, "train"),
      train_file=_TRAIN.value, max_seq_length=recipe.max_seq_length,
      batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
      num_epochs=recipe.num_epochs, warmup_fraction=recipe.warmup_fraction,
      weight_decay=recipe.weight_decay, grad_clip_norm=recipe.max_grad_norm, seed=seed,
      length_buckets=_BUCKETS.value, doc_stride=recipe.doc_stride,
      max_query_length=_QUERY.value,
      n_best_size=recipe.n_best_size, max_answer_length=recipe.max_answer_length,
      qa_metric="squad")
  text = text_tasks.make_text_task("qa", **base.text_options())
  trained = finetune.run(base, text)
  scored = dataclasses.replace(base, init_from=trained["best_model_dir"], train_file=None,
                               eval_file=_EVAL.value, output_dir=os.path.join(out, "eval"))
  finetune.run(scored, text)
  with open(os.path.join(out, "eval", "eval_predictions.json"), encoding="utf-8") as f:
    predictions = json.load(f)
  return {"predictions": predictions, "train_questions": trained["num_train_examples"],
          "train_steps": trained["train_steps"], "train_seconds": trained["train_runtime"],
          "last_epoch_train_loss": trained.get("train_loss"),
          "length_buckets": trained["length_buckets"]}


def _run(side, recipe, seed, golds):
  out = os.path.join(_WORKDIR.value, f"{side}_seed{seed}")
  path = os.path.join(out, "result.json")
  done = qa_reference.load_result(path, recipe)
  if done is not None:
    print(f"{path}: done before, not repeated", flush=True)
    return done
  start = time.perf_counter()
  if side == "ours":
    result = _ours(recipe, seed, out)
  else:
    result = qa_reference.finetune_transformers(_INIT.value, _TRAIN.value, _EVAL.value, recipe,
                                                seed, out)
  scores = qa_metrics.squad_v1_evaluate(golds, result.pop("predictions"))
  result = {"side": side, "seed": seed, "exact_match": scores["exact_match"], "f1": scores["f1"],
            **result, "run_seconds": time.perf_counter() - start,
            "recipe": dataclasses.asdict(recipe)}
  fileio.write_json_atomic(path, result, indent=1)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_SIDES.value) - set(qa_reference.SIDES))
  if unknown or not _SIDES.value:
    raise ValueError(f"--sides={','.join(_SIDES.value)}: choose from {qa_reference.SIDES}")
  if not _SEEDS.value or not all(s.isdigit() for s in _SEEDS.value):
    raise ValueError(f"--seeds={','.join(_SEEDS.value)}: a list of integers >= 0")
  for name, holder in (("train_file", _TRAIN), ("eval_file", _EVAL)):
    if not os.path.isfile(holder.value):
      raise FileNotFoundError(f"--{name}={holder.value}: no such file")
  recipe = qa_reference.Recipe(num_epochs=_EPOCHS.value, learning_rate=_LR.value,
                               batch_size=_BATCH.value, max_seq_length=_LEN.value,
                               doc_stride=_STRIDE.value)
  golds = qa_reference.gold_answers(qa_reference.read_squad(_EVAL.value))
  os.makedirs(_WORKDIR.value, exist_ok=True)
  runs = []
  for seed in (int(s) for s in _SEEDS.value):
    for side in (s for s in qa_reference.SIDES if s in _SIDES.value):
      runs.append(_run(side, recipe, seed, golds))
      print(json.dumps(runs[-1]), flush=True)
  summary = qa_reference.summarize(runs)
  table = qa_reference.format_table(runs, summary)
  fileio.write_json_atomic(os.path.join(_WORKDIR.value, "qa_parity.json"),
                           {"recipe": dataclasses.asdict(recipe), "runs": runs,
                            "summary": summary, "table": table}, indent=1)
  print(table, flush=True)


if __name__ == "__main__":
  cli.run(main)
