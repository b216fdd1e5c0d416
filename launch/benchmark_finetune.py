r"""Fine-tuning examples/s: `launch.finetune` vs transformers' `Trainer`, one run, same data.

  python -m launch.benchmark_finetune [--task=classification|qa] [--workdir=/tmp/bert_jax_ft_bench] \
      [--num_examples=2048] [--max_seq_length=128] [--batch_size=32] [--num_epochs=2] \
      [--config=bert_jax/configs/tiny.py --config.model.hidden_size=256 ...]

Both sides train the same randomly initialised BERT (saved once as a Hugging Face directory
with a WordPiece vocabulary) on the same made-up data, at the same sequence length and batch
size, on this machine's CPU:
  classification  sentences of 6-20 words (the shape of SST-2 / reviews), 2 labels;
  qa              SQuAD v1.1-layout questions of 4-12 words over contexts of 40-240 words
                  (one window each at 384, so examples = windows on both sides).
Ours runs `python -m launch.finetune` once per `--ours` spec (the number of length buckets,
0 = chosen by the cost model, and the compilation cache: off, a new one, or the one the
previous run filled); transformers' runs `Trainer` with padding per batch
(`DataCollatorWithPadding`) and to max_seq_length (its run_glue / run_qa default). Reported:
  train_samples_per_second   training rows per second of training, compilation included,
                             evaluation excluded: Trainer's own figure, and ours from
                             eval_results.json, counted the same way;
  steady_samples_per_second  ours over the epochs after the first (compiled);
  process_samples_per_second ours over the whole process (start-up, model load, tokenization,
                             compilation, evaluations and the best-model export included).
The sides alternate (ours, theirs, ours, theirs) so that a change in the machine's load
falls on both. transformers, torch and accelerate are needed only here. Prints one JSON
line per run and a summary line with the ratios.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from bert_jax.finetune import qa_reference
from launch import cli

_TASK = flags.DEFINE_enum("task", "classification", ["classification", "qa"], "Which data.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bert_jax_ft_bench", "Scratch directory.")
_N = flags.DEFINE_integer("num_examples", 2048, "Training examples.")
_LEN = flags.DEFINE_integer("max_seq_length", None, "Sequence length (default: 128, QA 384).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_EPOCHS = flags.DEFINE_integer("num_epochs", 2, "Epochs (>= 2: the later ones are steady state).")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "bert_jax/configs/tiny.py", "Config file: the model's size (hidden size, layers, "
    "heads, intermediate size; the rest is transformers' BertConfig default).", lock_config=True)
_RUNS = flags.DEFINE_list("runs", ["ours", "transformers"], "Which side(s) to run.")
_OURS = flags.DEFINE_list(
    "ours", ["4:none", "0:cold", "0:warm"],
    "Our runs, BUCKETS:CACHE each: --length_buckets (0: chosen by the cost model) and the "
    "compilation cache (none: off; cold: a new empty cache; warm: the cache the last cold "
    "run filled, i.e. a second identical run).")
_TRAINER = flags.DEFINE_list("trainer", ["batch", "max"],
                             "Trainer's runs: padding per batch, or to max_seq_length.")
_WORDS = 2000
_EVAL_EXAMPLES = 256


def _seq_len():
  return _LEN.value or (384 if _TASK.value == "qa" else 128)


def _words(rng, lo, hi):
  return [f"w{i}" for i in rng.integers(0, _WORDS, int(rng.integers(lo, hi + 1)))]


def _write_classification(root, split, n, rng):
  path = os.path.join(root, f"{split}.csv")
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["sentence", "label"])
    for _ in range(n):
      words = _words(rng, 6, 20)
      w.writerow([" ".join(words), int(words[0][1:]) % 2])
  return path


def _write_qa(root, split, n, rng):
  """SQuAD v1.1 layout: the answer is 1-3 words of the context, asked for by the words
  around it (so the task is learnable)."""
  path = os.path.join(root, f"{split}.json")
  paragraphs = []
  for i in range(n):
    context = _words(rng, 40, 240)
    at, span = int(rng.integers(4, len(context) - 4)), int(rng.integers(1, 4))
    question = context[at - 3:at] + _words(rng, 1, 9)
    answer = " ".join(context[at:at + span])
    text = " ".join(context)
    start = len(" ".join(context[:at])) + 1
    assert text[start:start + len(answer)] == answer
    paragraphs.append({"context": text, "qas": [{
        "id": f"{split}{i}", "question": " ".join(question),
        "answers": [{"text": answer, "answer_start": start}]}]})
  with open(path, "w") as f:
    json.dump({"version": "1.1", "data": [{"title": "bench", "paragraphs": paragraphs}]}, f)
  return path


def _make_inputs(root):
  """A random BERT as a Hugging Face directory, and the train/eval files."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  model_dir = os.path.join(root, "model")
  os.makedirs(model_dir, exist_ok=True)
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(_WORDS)]
  with open(os.path.join(model_dir, "vocab.txt"), "w") as f:
    f.write("\n".join(vocab) + "\n")
  torch.manual_seed(0)
  m = _CONFIG.value.model
  config = transformers.BertConfig(
      vocab_size=len(vocab), hidden_size=m.hidden_size, num_hidden_layers=m.num_hidden_layers,
      num_attention_heads=m.num_attention_heads, intermediate_size=m.intermediate_size,
      max_position_embeddings=512)
  transformers.BertForPreTraining(config).save_pretrained(model_dir)
  transformers.BertTokenizerFast(os.path.join(model_dir, "vocab.txt"),
                                 do_lower_case=True).save_pretrained(model_dir)
  rng = np.random.default_rng(0)
  write = _write_qa if _TASK.value == "qa" else _write_classification
  files = {split: write(root, split, n, rng)
           for split, n in (("train", _N.value), ("eval", _EVAL_EXAMPLES))}
  return model_dir, files


def _ours(model_dir, files, out, length_buckets, cache):
  cache_dir = os.path.join(_WORKDIR.value, "xla")
  if cache == "cold":
    shutil.rmtree(cache_dir, ignore_errors=True)
  cmd = [sys.executable, "-m", "launch.finetune", f"--task={_TASK.value}",
         f"--init_from={model_dir}", f"--output_dir={out}", f"--train_file={files['train']}",
         f"--eval_file={files['eval']}", f"--max_seq_length={_seq_len()}",
         f"--batch_size={_BATCH.value}", f"--num_epochs={_EPOCHS.value}",
         f"--length_buckets={length_buckets}", "--log_every_steps=1000000",
         f"--compilation_cache_dir={'none' if cache == 'none' else cache_dir}"]
  start = time.perf_counter()
  proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), check=False)
  wall = time.perf_counter() - start
  if proc.returncode:
    raise RuntimeError(f"launch.finetune failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}")
  with open(os.path.join(out, "eval_results.json")) as f:
    results = json.load(f)
  later = results["history"][1:]
  rows = results["num_train_examples"]  # QA: windows (one per example here)
  return {"framework": "bert-jax", "length_buckets": length_buckets, "cache": cache,
          "buckets_used": results["length_buckets"], "compile_seconds": results["compile_seconds"],
          "train_rows": rows, "train_steps": results["train_steps"],
          "train_samples_per_second": results["train_samples_per_second"],
          "steady_samples_per_second": (rows * len(later) / sum(h["train_seconds"] for h in later)
                                        if later else None),
          "process_samples_per_second": rows * _EPOCHS.value / wall,
          "process_seconds": wall}


def _hf_classification_data(tok, files, pad_to_max):
  with open(files["train"], newline="") as f:
    rows = list(csv.DictReader(f))
  enc = tok([r["sentence"] for r in rows], truncation=True, max_length=_seq_len(),
            padding="max_length" if pad_to_max else False)
  return [{**{k: enc[k][i] for k in enc}, "labels": int(r["label"])}
          for i, r in enumerate(rows)]


def _hf_qa_data(tok, files, pad_to_max):
  """run_qa's training features (bert_jax/finetune/qa_reference.py; every context here
  fits one window)."""
  return qa_reference.train_features(tok, qa_reference.read_squad(files["train"]), _seq_len(),
                                     128, pad_to_max)


def _theirs(model_dir, files, out, pad_to_max):
  import transformers  # pylint: disable=import-outside-toplevel
  tok = transformers.AutoTokenizer.from_pretrained(model_dir)
  if _TASK.value == "qa":
    model = transformers.BertForQuestionAnswering.from_pretrained(model_dir)
    data = _hf_qa_data(tok, files, pad_to_max)
  else:
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    data = _hf_classification_data(tok, files, pad_to_max)
  steps = len(data) * _EPOCHS.value // _BATCH.value
  args = transformers.TrainingArguments(
      output_dir=out, per_device_train_batch_size=_BATCH.value, num_train_epochs=_EPOCHS.value,
      learning_rate=3e-5, weight_decay=0.01, save_strategy="no",
      warmup_steps=max(1, steps // 10), report_to=[], logging_strategy="no", use_cpu=True,
      dataloader_num_workers=0, seed=0)
  trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                 data_collator=transformers.DataCollatorWithPadding(tok))
  result = trainer.train()
  return {"framework": f"transformers {transformers.__version__} Trainer (PyTorch)",
          "pad_to_max_length": pad_to_max, "train_rows": len(data),
          "train_samples_per_second": result.metrics["train_samples_per_second"]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = set(_RUNS.value) - {"ours", "transformers"}
  if unknown:
    raise ValueError(f"--runs: unknown side(s) {sorted(unknown)}; known: ours, transformers")
  os.makedirs(_WORKDIR.value, exist_ok=True)
  model_dir, files = _make_inputs(_WORKDIR.value)
  common = {"task": _TASK.value, "num_examples": _N.value, "max_seq_length": _seq_len(),
            "batch_size": _BATCH.value, "num_epochs": _EPOCHS.value,
            "hidden_size": _CONFIG.value.model.hidden_size,
            "layers": _CONFIG.value.model.num_hidden_layers}
  best = {}
  ours = [spec.split(":") for spec in _OURS.value] if "ours" in _RUNS.value else []
  theirs = list(_TRAINER.value) if "transformers" in _RUNS.value else []
  for buckets, cache in ours:
    if cache not in ("none", "cold", "warm") or not buckets.isdigit():
      raise ValueError(f"--ours={buckets}:{cache}: BUCKETS is an integer >= 0, CACHE none|cold|warm")
  # Alternating ours and theirs, so that a change in the machine's load falls on both.
  for i in range(max(len(ours), len(theirs))):
    if i < len(ours):
      buckets, cache = ours[i]
      row = _ours(model_dir, files, os.path.join(_WORKDIR.value, "ours"), int(buckets), cache)
      best[f"ours_buckets_{buckets}_{cache}"] = row["train_samples_per_second"]
      print(json.dumps({**common, **row}), flush=True)
    if i < len(theirs):
      row = _theirs(model_dir, files, os.path.join(_WORKDIR.value, "hf"), theirs[i] == "max")
      best["trainer_pad_" + theirs[i]] = row["train_samples_per_second"]
      print(json.dumps({**common, **row}), flush=True)
  if "trainer_pad_batch" in best:
    print(json.dumps({"summary": True, **common, **{k: round(v, 2) for k, v in best.items()},
                      **{f"ratio_{k}_to_trainer_pad_batch": round(v / best["trainer_pad_batch"], 3)
                         for k, v in best.items() if k.startswith("ours")}}), flush=True)

if __name__ == "__main__":
  cli.run(main)
