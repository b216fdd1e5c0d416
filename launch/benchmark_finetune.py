r"""Fine-tuning examples/s on short sentences: `launch.finetune` vs transformers' `Trainer`.

  python -m launch.benchmark_finetune [--workdir=/tmp/bert_jax_ft_bench] [--num_examples=2048] \
      [--max_seq_length=128] [--batch_size=32] [--num_epochs=2] [--hidden_size=128 ...]

Both train the same randomly initialised BERT (saved once as a Hugging Face directory with a
WordPiece vocabulary) for sentence classification on the same made-up sentences of 6-20
words, at the same sequence length and batch size, on the CPU in this process's machine.
Ours runs `python -m launch.finetune` (length buckets on and off); transformers' runs
`Trainer` with padding to max_seq_length (as its run_glue example does by default) and with
padding per batch (`DataCollatorWithPadding`). Ours reports training examples/s over the
epochs after the first (compiled, steady state) and over the whole process (model load,
tokenization and compilation included); transformers' is Trainer's own
`train_samples_per_second` (its training loop). transformers, torch and accelerate are needed
only here. Prints one JSON line per run.
"""
import csv
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bert_jax_ft_bench", "Scratch directory.")
_N = flags.DEFINE_integer("num_examples", 2048, "Training sentences.")
_LEN = flags.DEFINE_integer("max_seq_length", 128, "Sequence length.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_EPOCHS = flags.DEFINE_integer("num_epochs", 2, "Epochs (>= 2: the later ones are timed).")
_HIDDEN = flags.DEFINE_integer("hidden_size", 128, "Model width (BERT-tiny: 128).")
_LAYERS = flags.DEFINE_integer("num_layers", 2, "Layers (BERT-tiny: 2).")
_HEADS = flags.DEFINE_integer("num_heads", 2, "Attention heads.")
_RUNS = flags.DEFINE_list("runs", ["ours", "transformers"], "Which side(s) to run.")
_WORDS = 2000


def _make_inputs(root):
  """A random BERT as a Hugging Face directory, and train/eval CSVs of short sentences."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  model_dir = os.path.join(root, "model")
  os.makedirs(model_dir, exist_ok=True)
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(_WORDS)]
  with open(os.path.join(model_dir, "vocab.txt"), "w") as f:
    f.write("\n".join(vocab) + "\n")
  torch.manual_seed(0)
  config = transformers.BertConfig(
      vocab_size=len(vocab), hidden_size=_HIDDEN.value, num_hidden_layers=_LAYERS.value,
      num_attention_heads=_HEADS.value, intermediate_size=4 * _HIDDEN.value,
      max_position_embeddings=512)
  transformers.BertForPreTraining(config).save_pretrained(model_dir)
  transformers.BertTokenizerFast(os.path.join(model_dir, "vocab.txt"),
                                 do_lower_case=True).save_pretrained(model_dir)
  rng = np.random.default_rng(0)
  files = {}
  for split, n in (("train", _N.value), ("eval", 256)):
    path = os.path.join(root, f"{split}.csv")
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["sentence", "label"])
      for _ in range(n):
        words = rng.integers(0, _WORDS, int(rng.integers(6, 21)))
        w.writerow([" ".join(f"w{i}" for i in words), int(words[0] % 2)])
    files[split] = path
  return model_dir, files


def _ours(model_dir, files, out, bucketing):
  cmd = [sys.executable, "-m", "launch.finetune", "--task=classification",
         f"--init_from={model_dir}", f"--output_dir={out}", f"--train_file={files['train']}",
         f"--eval_file={files['eval']}", f"--max_seq_length={_LEN.value}",
         f"--batch_size={_BATCH.value}", f"--num_epochs={_EPOCHS.value}", "--log_every_steps=1",
         f"--length_buckets={4 if bucketing else 1}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env)
  stamps = []  # (step, epoch, wall time the progress line arrived)
  for line in proc.stdout:
    m = re.match(r"step (\d+)/(\d+) epoch (\d+)", line)
    if m:
      stamps.append((int(m.group(1)), int(m.group(3)), time.perf_counter()))
  if proc.wait():
    raise RuntimeError(f"launch.finetune failed: {' '.join(cmd)}")
  steps_per_epoch = max(s for s, e, _ in stamps if e == 1)
  later = [t for s, e, t in stamps if e >= 2]
  end_of_first = max(t for s, e, t in stamps if e == 1)
  timed = _N.value * (_EPOCHS.value - 1) / (later[-1] - end_of_first) if later else None
  return {"framework": "bert-jax", "length_buckets": bucketing,
          "steps_per_epoch": steps_per_epoch,
          "examples_per_s_after_first_epoch": timed,
          "examples_per_s_all_epochs": _N.value * _EPOCHS.value / (stamps[-1][2] - start)}


def _theirs(model_dir, files, out, pad_to_max):
  import transformers  # pylint: disable=import-outside-toplevel
  tok = transformers.AutoTokenizer.from_pretrained(model_dir)
  model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
  with open(files["train"], newline="") as f:
    rows = list(csv.DictReader(f))
  enc = tok([r["sentence"] for r in rows], truncation=True, max_length=_LEN.value,
            padding="max_length" if pad_to_max else False)
  data = [{**{k: enc[k][i] for k in enc}, "labels": int(r["label"])} for i, r in enumerate(rows)]
  args = transformers.TrainingArguments(
      output_dir=out, per_device_train_batch_size=_BATCH.value, num_train_epochs=_EPOCHS.value,
      learning_rate=3e-5, weight_decay=0.01, save_strategy="no",
      warmup_steps=max(1, _N.value * _EPOCHS.value // _BATCH.value // 10),
      report_to=[], logging_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=0)
  trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                 data_collator=transformers.DataCollatorWithPadding(tok))
  result = trainer.train()
  return {"framework": f"transformers {transformers.__version__} Trainer (PyTorch)",
          "pad_to_max_length": pad_to_max,
          "examples_per_s_all_epochs": result.metrics["train_samples_per_second"]}


def main(argv):
  del argv
  os.makedirs(_WORKDIR.value, exist_ok=True)
  model_dir, files = _make_inputs(_WORKDIR.value)
  common = {"num_examples": _N.value, "max_seq_length": _LEN.value, "batch_size": _BATCH.value,
            "num_epochs": _EPOCHS.value, "hidden_size": _HIDDEN.value, "layers": _LAYERS.value}
  for bucketing in (True, False) if "ours" in _RUNS.value else ():
    print(json.dumps({**common, **_ours(model_dir, files, os.path.join(_WORKDIR.value, "ours"),
                                        bucketing)}), flush=True)
  for pad_to_max in (True, False) if "transformers" in _RUNS.value else ():
    print(json.dumps({**common, **_theirs(model_dir, files, os.path.join(_WORKDIR.value, "hf"),
                                          pad_to_max)}), flush=True)


if __name__ == "__main__":
  app.run(main)
