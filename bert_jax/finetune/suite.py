"""A benchmark suite (GLUE, CLUE) in one command: every task, the papers' recipe, one table.

`run_suite(cfg, suite, make_text)` runs, for each task of `suite` (the text side's
`finetune.suites` package: where each task's files are and how to read them, its
leaderboard columns, its submission file; `make_text` is the text side's
`make_text_task`, which this module never imports):

  1. its files, found and converted (`layout.prepare`); a missing or malformed file stops
     this task only, with one message naming the file and the expected layout;
  2. the recipe: one fine-tuning run (`loop.run`) per learning rate x seed (BERT: learning
     rates {5e-5, 4e-5, 3e-5, 2e-5}, batch 32, 3 epochs; seeds: five, whose median RoBERTa
     reports), each keeping its best epoch on dev; tasks with more evaluations (MNLI's
     mismatched dev) evaluate each run's best model there too;
  3. the best run on dev (its score: the task's leaderboard score), and beside it the
     median over seeds at the learning rate whose median is highest;
  4. the best run's test predictions as the leaderboard's submission file(s).

Resumable: a run whose eval_results.json exists is not rerun, and a task whose
`<task>/task_results.json` exists is not rerun at all. Output (`output_dir`):
  <task>/runs/lr<lr>-seed<seed>/   each run's fine-tuning output (models other than the
                                   best run's are removed once the task is done)
  <task>/task_results.json         the task's record (every run's columns and score)
  submission/                      the leaderboard's files (GLUE: CoLA.tsv, ...; CLUE:
                                   <task>_predict.json)
  results.json, results.md         every task's record / a leaderboard-style table; a task
                                   that did not run is marked so, and the suite average is
                                   given only when every averaged task ran.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
from typing import Any, Callable

from bert_jax import fileio
from bert_jax.finetune import loop
from bert_jax.finetune.config import FinetuneConfig
from bert_jax.finetune.export import BEST_MODEL_DIR

BERT_LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
TASK_RESULTS = "task_results.json"
# Failures that stop one task (bad or missing files, a diverged run), not the suite.
TASK_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  suite: str
  data_dir: str
  init_from: str
  output_dir: str
  tasks: tuple[str, ...] | None = None          # None: all of the suite's
  learning_rates: tuple[float, ...] = BERT_LEARNING_RATES
  seeds: tuple[int, ...] = DEFAULT_SEEDS
  # FinetuneConfig fields for every run (batch_size, num_epochs, lora_rank, ...).
  finetune: dict = dataclasses.field(default_factory=dict)

  def validate(self) -> None:
    for name in ("data_dir", "init_from", "output_dir"):
      if not getattr(self, name):
        raise ValueError(f"{name} is required")
    if not os.path.isdir(self.data_dir):
      raise FileNotFoundError(f"data_dir={self.data_dir}: not a directory")
    if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
      raise ValueError(f"learning_rates={self.learning_rates}: give one or more, all positive")
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"seeds={self.seeds}: give one or more, without repeats")


def _log(text: str) -> None:
  print(text, flush=True)


# ----------------------------------------------------------------------------- one run


def _metrics_of(results: dict) -> dict:
  return {k[len("eval_"):]: v for k, v in results.items() if k.startswith("eval_")
          and isinstance(v, (int, float))}


def _finished(output_dir: str) -> dict | None:
  path = os.path.join(output_dir, "eval_results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _run_once(cfg: FinetuneConfig, make_text) -> dict:
  """loop.run, or the results of an earlier finished run in the same folder."""
  done = _finished(cfg.output_dir)
  if done is not None:
    return done
  return loop.run(cfg, make_text(cfg.task, **cfg.text_options()))


def one_run(cfg: SuiteConfig, prepared, make_text, lr: float, seed: int,
            run_dir: str) -> dict:
  """A fine-tuning run of the grid, then its further evaluations (e.g. MNLI-mm); returns
  {lr, seed, metrics: {split: eval metrics}, predictions: {split: file}, dir}."""
  fields = {**cfg.finetune, **prepared.options}
  finetune = FinetuneConfig(
      task=prepared.kind, init_from=cfg.init_from, output_dir=run_dir,
      train_file=prepared.train, eval_file=prepared.dev, predict_file=prepared.test,
      labels=prepared.labels or None, learning_rate=lr, seed=seed, **fields)
  results = _run_once(finetune, make_text)
  metrics = {"dev": _metrics_of(results)}
  predictions = {"test": results.get("predictions_file")}
  for extra in prepared.extras:
    extra_cfg = dataclasses.replace(
        finetune, init_from=os.path.join(run_dir, BEST_MODEL_DIR),
        output_dir=os.path.join(run_dir, extra.name), train_file=None,
        eval_file=extra.eval_file, predict_file=extra.predict_file)
    extra_results = _run_once(extra_cfg, make_text)
    if extra.eval_file is not None:
      metrics[extra.name] = _metrics_of(extra_results)
    predictions[extra.name] = extra_results.get("predictions_file")
  return dict(lr=lr, seed=seed, metrics=metrics, predictions=predictions, dir=run_dir)


# ----------------------------------------------------------------------------- one task


def select(layout, runs: list[dict]) -> tuple[dict, dict]:
  """(best run, median record): the best run's score is the highest on dev; the median
  is over seeds at the learning rate whose median score is highest."""
  for r in runs:
    r["values"] = layout.values(r["metrics"])
    r["score"] = layout.score(r["values"])
  best = max(runs, key=lambda r: r["score"])  # the first of equals: grid order
  by_lr: dict[float, list[dict]] = {}
  for r in runs:
    by_lr.setdefault(r["lr"], []).append(r)
  lr = max(by_lr, key=lambda k: statistics.median(r["score"] for r in by_lr[k]))
  group = by_lr[lr]
  median = dict(lr=lr, seeds=len(group), score=statistics.median(r["score"] for r in group),
                values={c: statistics.median(r["values"][c] for r in group)
                        for c in group[0]["values"]})
  return best, median


def run_task(cfg: SuiteConfig, layout, make_text, position: str) -> dict:
  """Every run of one task, its selection and submission; the task's record."""
  task_dir = os.path.join(cfg.output_dir, layout.name)
  record_path = os.path.join(task_dir, TASK_RESULTS)
  if os.path.exists(record_path):
    _log(f"{position} {layout.name}: finished earlier ({record_path}), not rerun")
    with open(record_path) as f:
      return json.load(f)
  paths = layout.find(cfg.data_dir)
  prepared = layout.prepare(layout, paths, os.path.join(task_dir, "data"))
  if prepared.test is None:
    _log(f"{position} {layout.name}: no test file in {paths['folder']}: no submission file")
  grid = [(lr, seed) for lr in cfg.learning_rates for seed in cfg.seeds]
  runs = []
  for k, (lr, seed) in enumerate(grid, 1):
    _log(f"{position} {layout.name}: run {k}/{len(grid)} (learning rate {lr:g}, seed {seed})")
    run = one_run(cfg, prepared, make_text, lr, seed,
                  os.path.join(task_dir, "runs", f"lr{lr:g}-seed{seed}"))
    runs.append(run)
  best, median = select(layout, runs)
  submission_dir = os.path.join(cfg.output_dir, "submission")
  os.makedirs(submission_dir, exist_ok=True)
  files = layout.submission(layout, prepared, best["predictions"], submission_dir)
  record = dict(task=layout.name, status="done", kind=prepared.kind,
                columns=[c.name for c in layout.columns], in_average=layout.in_average,
                best={k: best[k] for k in ("lr", "seed", "values", "score", "dir")},
                median=median, runs=[{k: r[k] for k in ("lr", "seed", "values", "score",
                                                        "metrics")} for r in runs],
                submission=files, notes=list(prepared.notes))
  _drop_other_models(runs, best)
  fileio.write_text_atomic(record_path, json.dumps(record, indent=1))
  _log(f"{position} {layout.name}: score {best['score']:.2f} (best of {len(runs)} on dev; "
       f"median {median['score']:.2f} at learning rate {median['lr']:g})")
  return record


def _drop_other_models(runs: list[dict], best: dict) -> None:
  """Only the best run's model is kept (a suite's grid would otherwise keep dozens)."""
  for r in runs:
    if r is not best:
      shutil.rmtree(os.path.join(r["dir"], BEST_MODEL_DIR), ignore_errors=True)


# ----------------------------------------------------------------------------- the suite


def run_suite(cfg: SuiteConfig, suite, make_text: Callable[..., Any]) -> dict:
  """Every task of `suite` (or cfg.tasks); results.json / results.md; returns the
  results (`failed`: the tasks that did not run, with their reasons)."""
  cfg.validate()
  layouts = [suite.get(t) for t in cfg.tasks] if cfg.tasks else list(suite.tasks)
  os.makedirs(cfg.output_dir, exist_ok=True)
  records = {}
  for i, layout in enumerate(layouts, 1):
    position = f"[{i}/{len(layouts)}]"
    try:
      records[layout.name] = run_task(cfg, layout, make_text, position)
    except TASK_ERRORS as e:
      records[layout.name] = dict(task=layout.name, status="not run", reason=str(e),
                                  columns=[c.name for c in layout.columns],
                                  in_average=layout.in_average)
      _log(f"{position} {layout.name}: NOT RUN: {e}")
  results = dict(suite=suite.name, init_from=cfg.init_from, data_dir=cfg.data_dir,
                 learning_rates=list(cfg.learning_rates), seeds=list(cfg.seeds),
                 finetune=cfg.finetune, average_rule=suite.average_rule,
                 average=suite_average(records, [t.name for t in suite.tasks
                                                 if t.in_average]),
                 tasks=records)
  results["failed"] = {k: r["reason"] for k, r in records.items() if r["status"] != "done"}
  fileio.write_text_atomic(os.path.join(cfg.output_dir, "results.json"),
                           json.dumps(results, indent=1, ensure_ascii=False))
  table = results_table(results)
  fileio.write_text_atomic(os.path.join(cfg.output_dir, "results.md"), table)
  _log(table)
  return results


def suite_average(records: dict, averaged: list[str]) -> dict:
  """The suite score (mean of the averaged tasks' scores) of the best and the median runs;
  `complete` only when every averaged task of the suite ran."""
  done = [n for n in averaged if records.get(n, {}).get("status") == "done"]
  out = dict(tasks=averaged, ran=done, complete=len(done) == len(averaged))
  for which in ("best", "median"):
    out[which] = (statistics.fmean(records[n][which]["score"] for n in done) if done else None)
  return out


def _cell(record: dict, which: str) -> str:
  if record["status"] != "done":
    return "not run"
  values = record[which]["values"]
  return "/".join(f"{values[c]:.1f}" for c in record["columns"])


def _average_cell(average: dict, which: str) -> str:
  if average[which] is None:
    return "—"
  if average["complete"]:
    return f"{average[which]:.1f}"
  return (f"incomplete ({len(average['ran'])} of {len(average['tasks'])} tasks; their mean "
          f"{average[which]:.1f})")


def results_table(results: dict) -> str:
  """results.md: a leaderboard-style row for the best and the median runs, then per task."""
  records = results["tasks"]
  names = list(records)
  head = ["", "Score"] + [f"{n} ({'/'.join(records[n]['columns'])})" for n in names]
  lines = [f"# {results['suite']} (dev sets)", "",
           f"Model: `{results['init_from']}`. Per task: learning rates "
           f"{', '.join(f'{lr:g}' for lr in results['learning_rates'])} x seeds "
           f"{', '.join(map(str, results['seeds']))}; best on dev, and the median over seeds "
           "at the learning rate with the best median.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for which, label in (("best", "best on dev"), ("median", "median")):
    lines.append("| " + " | ".join([label, _average_cell(results["average"], which)]
                                   + [_cell(records[n], which) for n in names]) + " |")
  lines += ["", "| Task | Score (best) | Score (median) | Learning rate / seed of the best | "
            "In the average | Status |", "|---|---|---|---|---|---|"]
  for n in names:
    r = records[n]
    if r["status"] == "done":
      lines.append(f"| {n} | {r['best']['score']:.2f} | {r['median']['score']:.2f} | "
                   f"{r['best']['lr']:g} / {r['best']['seed']} | "
                   f"{'yes' if r['in_average'] else 'no'} | done |")
    else:
      lines.append(f"| {n} | — | — | — | {'yes' if r['in_average'] else 'no'} | "
                   f"NOT RUN: {r['reason']} |")
  lines += ["", f"Average: {results['average_rule']}", ""]
  files = [os.path.basename(f) for r in records.values() for f in r.get("submission", [])]
  lines.append("Submission files (submission/): " + (", ".join(files) if files else "none"))
  return "\n".join(lines) + "\n"
