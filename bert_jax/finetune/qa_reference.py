"""transformers' extractive-QA fine-tuning as the reference for bert-jax's: run_qa's
recipe with bert-jax's optimiser settings, and the per-seed table that compares the two.

What the reference does, as transformers' `examples/pytorch/question-answering/run_qa.py`:
  features      question (leading spaces stripped) then context, `truncation=only_second`,
                padded to max_seq_length, overflowing windows with `stride` tokens of
                overlap (run_qa's --doc_stride; bert-jax's doc_stride is the step between
                window starts instead, so equal numbers give windows that start a little
                differently after the first one);
  labels        from the offsets: the tokens holding the answer's first and last
                characters, or [CLS] (0, 0) where the window does not hold the whole answer;
  model         `BertForQuestionAnswering` (PyTorch) from the checkpoint, `Trainer`;
  predictions   per question, over its windows: the n_best_size highest start and end
                logits, spans inside the context, end >= start, at most max_answer_length
                tokens, the best start + end logit sum wins (SQuAD v1.1: no null answer).
The optimiser is bert-jax's (`FinetuneConfig`'s defaults): linear warmup over 10% of the
steps then linear decay, AdamW with weight decay 0.01 off biases and LayerNorm, eps 1e-6,
gradients clipped to global norm 1.0. transformers, torch and accelerate are needed only
here; they are imported when a function needs them.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

SIDES = ("ours", "transformers")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One fine-tuning recipe, the same on both sides."""
  num_epochs: int
  learning_rate: float
  batch_size: int
  max_seq_length: int
  doc_stride: int
  warmup_fraction: float = 0.1
  weight_decay: float = 0.01
  adam_epsilon: float = 1e-6
  max_grad_norm: float = 1.0
  n_best_size: int = 20
  max_answer_length: int = 30


@dataclasses.dataclass(frozen=True)
class Question:
  id: str
  question: str
  context: str
  answers: tuple[dict, ...]   # {"text", "answer_start"}, as in the SQuAD file


def read_squad(path: str) -> list[Question]:
  """The questions of a SQuAD-format JSON file (v1.1 layout: every question answered)."""
  with open(path, encoding="utf-8") as f:
    data = json.load(f)["data"]
  return [Question(qa["id"], qa["question"].lstrip(), p["context"], tuple(qa["answers"]))
          for article in data for p in article["paragraphs"] for qa in p["qas"]]


def gold_answers(questions: Sequence[Question]) -> dict[str, list[str]]:
  """id -> gold answer texts, for `qa_metrics.squad_v1_evaluate`."""
  return {q.id: [a["text"] for a in q.answers] for q in questions}


def encode_windows(tokenizer, questions: Sequence[Question], max_seq_length: int, stride: int,
                   pad_to_max: bool = True):
  """run_qa's tokenization: the tokenizer's BatchEncoding of every window, with offsets and
  `overflow_to_sample_mapping` (window -> question)."""
  return tokenizer([q.question for q in questions], [q.context for q in questions],
                   truncation="only_second", max_length=max_seq_length, stride=stride,
                   return_overflowing_tokens=True, return_offsets_mapping=True,
                   padding="max_length" if pad_to_max else False)


def answer_labels(offsets, sequence_ids, answer: dict) -> tuple[int, int]:
  """run_qa's start / end label of one window: the tokens holding the answer's first and
  last characters, or (0, 0) where the window does not hold the whole answer."""
  lo = answer["answer_start"]
  hi = lo + len(answer["text"])
  first = sequence_ids.index(1)
  last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
  if not (offsets[first][0] <= lo and offsets[last][1] >= hi):
    return 0, 0
  start = first
  while start < len(offsets) and offsets[start][0] <= lo:
    start += 1
  end = last
  while offsets[end][1] >= hi:
    end -= 1
  return start - 1, end + 1


def train_features(tokenizer, questions: Sequence[Question], max_seq_length: int, stride: int,
                   pad_to_max: bool = True) -> list[dict]:
  """run_qa's training features: one dict of model inputs and labels per window."""
  enc = encode_windows(tokenizer, questions, max_seq_length, stride, pad_to_max)
  features = []
  for i, offsets in enumerate(enc["offset_mapping"]):
    question = questions[enc["overflow_to_sample_mapping"][i]]
    start, end = answer_labels(offsets, enc.sequence_ids(i), question.answers[0])
    features.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                     "attention_mask": enc["attention_mask"][i], "start_positions": start,
                     "end_positions": end})
  return features


def best_spans(enc, questions: Sequence[Question], start_logits: np.ndarray,
               end_logits: np.ndarray, n_best_size: int = 20,
               max_answer_length: int = 30) -> dict[str, str]:
  """run_qa's post-processing (SQuAD v1.1): question id -> the answer text of the best
  span over its windows."""
  windows = collections.defaultdict(list)
  for i, e in enumerate(enc["overflow_to_sample_mapping"]):
    windows[e].append(i)
  predictions = {}
  for e, question in enumerate(questions):
    best = None
    for i in windows[e]:
      sequence_ids = enc.sequence_ids(i)
      offsets = [o if sequence_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
      for s in np.argsort(start_logits[i])[-1:-n_best_size - 1:-1]:
        for t in np.argsort(end_logits[i])[-1:-n_best_size - 1:-1]:
          if offsets[s] is None or offsets[t] is None or t < s or t - s + 1 > max_answer_length:
            continue
          score = float(start_logits[i][s] + end_logits[i][t])
          if best is None or score > best[0]:
            best = (score, question.context[offsets[s][0]:offsets[t][1]])
    predictions[question.id] = best[1] if best else ""
  return predictions


def _predict(model, tokenizer, questions: Sequence[Question], recipe: Recipe,
             batch_size: int = 64) -> dict[str, str]:
  import torch  # pylint: disable=import-outside-toplevel
  enc = encode_windows(tokenizer, questions, recipe.max_seq_length, recipe.doc_stride)
  model.eval()
  starts, ends = [], []
  with torch.no_grad():
    for b in range(0, len(enc["input_ids"]), batch_size):
      out = model(**{k: torch.tensor(enc[k][b:b + batch_size])
                     for k in ("input_ids", "token_type_ids", "attention_mask")})
      starts.append(out.start_logits.numpy())
      ends.append(out.end_logits.numpy())
  return best_spans(enc, questions, np.concatenate(starts), np.concatenate(ends),
                    recipe.n_best_size, recipe.max_answer_length)


def training_arguments(recipe: Recipe, num_windows: int, seed: int, output_dir: str):
  """Trainer's arguments for `recipe`: bert-jax's optimiser, run_qa's batches (one
  process, the CPU, no checkpoints)."""
  import transformers  # pylint: disable=import-outside-toplevel
  steps = math.ceil(num_windows / recipe.batch_size) * recipe.num_epochs
  return transformers.TrainingArguments(
      output_dir=output_dir, per_device_train_batch_size=recipe.batch_size,
      num_train_epochs=recipe.num_epochs, learning_rate=recipe.learning_rate,
      weight_decay=recipe.weight_decay, adam_epsilon=recipe.adam_epsilon,
      max_grad_norm=recipe.max_grad_norm, lr_scheduler_type="linear",
      warmup_steps=int(recipe.warmup_fraction * steps), save_strategy="no", report_to=[],
      # A line (loss, learning rate, epoch) every 10 steps: a long CPU run shows its progress.
      logging_strategy="steps", logging_steps=10, use_cpu=True, dataloader_num_workers=0,
      seed=seed, data_seed=seed, disable_tqdm=True)


def finetune_transformers(model_dir: str, train_file: str, eval_file: str, recipe: Recipe,
                          seed: int, output_dir: str) -> dict:
  """Fine-tunes `model_dir` with transformers' Trainer on `train_file` and predicts
  `eval_file` (the last epoch's model). Returns the predictions (id -> text), the windows,
  steps and seconds; scoring is the caller's."""
  import transformers  # pylint: disable=import-outside-toplevel
  tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
  features = train_features(tokenizer, read_squad(train_file), recipe.max_seq_length,
                            recipe.doc_stride)
  transformers.set_seed(seed)
  model = transformers.BertForQuestionAnswering.from_pretrained(model_dir)
  args = training_arguments(recipe, len(features), seed, output_dir)
  trainer = transformers.Trainer(model=model, args=args, train_dataset=features,
                                 data_collator=transformers.default_data_collator)
  start = time.perf_counter()
  result = trainer.train()
  train_seconds = time.perf_counter() - start
  predictions = _predict(model, tokenizer, read_squad(eval_file), recipe)
  return {"predictions": predictions, "train_windows": len(features),
          "train_steps": result.global_step, "train_seconds": train_seconds,
          "mean_train_loss": result.training_loss}


def summarize(runs: Sequence[Mapping]) -> dict:
  """Per side: the number of runs and the mean and sample standard deviation of its exact
  match and F1 (`runs`: dicts with side, seed, exact_match, f1)."""
  out = {}
  for side in SIDES:
    rows = [r for r in runs if r["side"] == side]
    if not rows:
      continue
    out[side] = {"runs": len(rows)}
    for metric in ("exact_match", "f1"):
      values = np.array([r[metric] for r in rows], float)
      out[side][f"{metric}_mean"] = float(values.mean())
      out[side][f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
  return out


def format_table(runs: Sequence[Mapping], summary: Mapping) -> str:
  """The per-seed table (EM / F1 of each side), then each side's mean and standard
  deviation, as plain text."""
  sides = [s for s in SIDES if s in summary]
  lines = ["seed  " + "  ".join(f"{s + ' EM':>16} {s + ' F1':>16}" for s in sides)]
  by_key = {(r["side"], r["seed"]): r for r in runs}
  for seed in sorted({r["seed"] for r in runs}):
    cells = []
    for side in sides:
      r = by_key.get((side, seed))
      cells.append(f"{r['exact_match']:16.2f} {r['f1']:16.2f}" if r else f"{'-':>16} {'-':>16}")
    lines.append(f"{seed:<4}  " + "  ".join(cells))

  def cell(stats, metric, key):
    value = stats[f"{metric}_{key}"]
    return f"{'-':>16}" if value is None else f"{value:16.2f}"
  for key in ("mean", "std"):
    lines.append(f"{key:<4}  " + "  ".join(
        f"{cell(summary[s], 'exact_match', key)} {cell(summary[s], 'f1', key)}" for s in sides))
  return "\n".join(lines)


def load_result(path: str, recipe: Recipe) -> dict | None:
  """A finished run's result.json, if it exists and ran `recipe` (else None)."""
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    result = json.load(f)
  return result if result.get("recipe") == dataclasses.asdict(recipe) else None
