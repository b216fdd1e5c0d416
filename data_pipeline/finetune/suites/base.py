"""What a benchmark suite is, text side: its tasks' file layouts, scores and submission files.

A `Suite` (GLUE, CLUE) is a list of `TaskLayout`s. Each layout knows, for one task of the
benchmark as it is distributed:
  * where its files are (`find`: the benchmark's folder names, e.g. GLUE's `CoLA/`, CLUE's
    `afqmc_public/` or `afqmc/`) and how to read them, quirks included (`prepare`: turns
    them into the files the fine-tuning tasks read, under the run's own folder, with the
    test examples' ids kept for the submission file);
  * its leaderboard columns (`metrics`: which eval metric of which evaluation, x100) and
    whether it counts in the suite's average;
  * the submission file the leaderboard takes (`write_submission`).
Every problem with the files is a `SuiteError` naming the file and what was expected.
Never imports jax.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Callable, Sequence

from data_pipeline.fileio import write_text_atomic
from data_pipeline.finetune import readers as fd


class SuiteError(ValueError):
  """A suite's files are missing or not in the benchmark's layout."""


@dataclasses.dataclass(frozen=True)
class Column:
  """A leaderboard column: `key` of the eval metrics of evaluation `split` ("dev", or an
  extra evaluation's name), shown x`scale`."""
  name: str
  key: str
  split: str = "dev"
  scale: float = 100.0


@dataclasses.dataclass(frozen=True)
class Extra:
  """A further evaluation / prediction with the best model of each run (MNLI-mm, AX)."""
  name: str
  eval_file: str | None
  predict_file: str | None


@dataclasses.dataclass
class Prepared:
  """A task's files, converted to what the fine-tuning task (`kind`) reads."""
  kind: str                          # fine-tuning task: classification, regression, qa, ...
  train: str
  dev: str
  test: str | None                   # None: the suite folder has no test file
  options: dict                      # text options (columns, qa_metric, ...)
  labels: tuple[str, ...] | None     # the label set in id order (None: not a label task)
  test_ids: list = dataclasses.field(default_factory=list)
  extras: list[Extra] = dataclasses.field(default_factory=list)
  extra_ids: dict[str, list] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)  # e.g. rows skipped, and why


@dataclasses.dataclass(frozen=True)
class TaskLayout:
  name: str                                    # the leaderboard's name (CoLA, AFQMC, ...)
  folders: tuple[str, ...]                     # folder names under the suite directory
  files: tuple[tuple[str, ...], ...]           # per split (train, dev, test): file candidates
  prepare: Callable[["TaskLayout", dict, str], Prepared]
  columns: tuple[Column, ...]
  submission: Callable[["TaskLayout", Prepared, dict, str], list[str]]
  in_average: bool = True
  score_columns: tuple[str, ...] | None = None  # columns of the task's score (None: all)

  def values(self, metrics: dict[str, dict]) -> dict[str, float]:
    return column_values(self, metrics)

  def score(self, values: dict[str, float]) -> float:
    return task_score(self, values)

  def find(self, data_dir: str) -> dict[str, str | None]:
    """{"train", "dev", "test"} -> path (test may be None); a SuiteError naming the files
    looked for when the folder, the train or the dev file is missing."""
    folder = next((os.path.join(data_dir, f) for f in self.folders
                   if os.path.isdir(os.path.join(data_dir, f))), None)
    if folder is None:
      raise SuiteError(f"{self.name}: no folder {' or '.join(self.folders)} in {data_dir}")
    found = {}
    for split, candidates in zip(("train", "dev", "test"), self.files):
      path = next((os.path.join(folder, c) for c in candidates
                   if os.path.exists(os.path.join(folder, c))), None)
      if path is None and split != "test":
        raise SuiteError(f"{self.name}: no {split} file ({' or '.join(candidates)}) in {folder}")
      found[split] = path
    found["folder"] = folder
    return found


def task_score(layout: TaskLayout, values: dict[str, float]) -> float:
  """The task's leaderboard score: the unweighted mean of its score columns (GLUE's rule
  for a task with two metrics; CLUE scores CMRC 2018 by EM alone)."""
  names = layout.score_columns or tuple(c.name for c in layout.columns)
  return sum(values[n] for n in names) / len(names)


def column_values(layout: TaskLayout, metrics: dict[str, dict]) -> dict[str, float]:
  """The leaderboard columns of one run from its evaluations' metrics ({split: metrics})."""
  return {c.name: float(metrics[c.split][c.key]) * c.scale for c in layout.columns}


# ----------------------------------------------------------------------------- reading


def read_tsv(path: str, columns: Sequence[str], *, header: bool = True,
             names: Sequence[str] | None = None, skip_malformed: bool = False
             ) -> tuple[list[dict], int]:
  """(rows as dicts, rows skipped) of a GLUE TSV. No quoting (GLUE's sentences hold
  unbalanced quotes). `header=False`: the columns are `names`, in order (CoLA's
  train / dev). Every name of `columns` must be there; a row with another number of
  fields is an error naming the expected columns, or skipped with `skip_malformed`
  (QQP's train / dev hold a few such rows)."""
  if not os.path.exists(path):
    raise SuiteError(f"{path}: file not found")
  with fd.open_text(path) as f:
    lines = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  if header:
    if not lines:
      raise SuiteError(f"{path}:1: empty file; expected a header with {', '.join(columns)}")
    names, lines, first = [h.strip() for h in lines[0]], lines[1:], 2
  else:
    first = 1
  missing = [c for c in columns if c not in names]
  if missing:
    raise SuiteError(f"{path}:1: not this task's layout: no column(s) {missing}; expected the "
                     f"columns {', '.join(columns)} (found {', '.join(names)})")
  rows, skipped = [], 0
  for n, values in enumerate(lines, first):
    if not values or all(not v.strip() for v in values):
      continue
    if len(values) != len(names):
      if skip_malformed:
        skipped += 1
        continue
      raise SuiteError(f"{path}:{n}: {len(values)} fields, expected {len(names)}: "
                       f"{', '.join(names)}")
    row = dict(zip(names, values))
    row["_line"] = n
    rows.append(row)
  if not rows:
    raise SuiteError(f"{path}: no rows")
  return rows, skipped


def read_json_lines(path: str, keys: Sequence[str]) -> list[dict]:
  """The objects of a CLUE JSON-lines file; each must have `keys` (the error names them)."""
  rows = []
  for line, row, columns in fd._read_jsonl(path):
    missing = [k for k in keys if k not in columns]
    if missing:
      raise SuiteError(f"{path}:{line}: not this task's layout: no key(s) {missing}; expected "
                       f"{', '.join(keys)} (found {', '.join(sorted(columns))})")
    row = dict(row)
    row["_line"] = line
    rows.append(row)
  if not rows:
    raise SuiteError(f"{path}: no rows")
  return rows


def check_dev_labels(layout: TaskLayout, train: list, dev: list, paths: dict,
                     labels: Sequence[str] | None = None) -> None:
  """Dev labels must be seen in train (and be among `labels`, when the task fixes them)."""
  seen = {r["label"] for r in train}
  if labels is not None:
    bad = sorted(seen - set(labels))
    if bad:
      raise SuiteError(f"{paths['train']}: label(s) {bad} are not {layout.name}'s labels "
                       f"{list(labels)}")
  unseen = sorted({r["label"] for r in dev} - seen)
  if unseen:
    raise SuiteError(f"{paths['dev']}: label(s) {unseen} do not occur in {paths['train']}")


def require_ids(layout: TaskLayout, rows: list[dict], key: str, path: str) -> list:
  """The ids of a test file's rows (the submission is keyed by them)."""
  for row in rows:
    if row.get(key) in (None, ""):
      raise SuiteError(f"{path}:{row['_line']}: test example without an id ({key!r}); "
                       f"{layout.name}'s submission is keyed by it")
  return [row[key] for row in rows]


def write_jsonl(path: str, rows: list[dict]) -> str:
  write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  return path


def read_predictions(path: str) -> list[dict]:
  """The fine-tuning loop's JSONL predictions, in input order."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def text_rows(rows: list[dict], text: Callable[[dict], str],
              pair: Callable[[dict], str] | None, labelled: bool,
              label: Callable[[dict], Any] = lambda r: r["label"]) -> list[dict]:
  """Rows in the generic JSONL layout (`text`, `text_pair`, `label`) of the sequence tasks."""
  out = []
  for r in rows:
    row = {"text": text(r)}
    if pair is not None:
      row["text_pair"] = pair(r)
    if labelled:
      row["label"] = label(r)
    out.append(row)
  return out


SEQUENCE_OPTIONS = dict(text_column="text", text_pair_column="text_pair", label_column="label")
SINGLE_OPTIONS = dict(text_column="text", text_pair_column=None, label_column="label")


@dataclasses.dataclass(frozen=True)
class Suite:
  name: str
  tasks: tuple[TaskLayout, ...]
  average_rule: str          # how the leaderboard averages, for results.md

  def get(self, name: str) -> TaskLayout:
    for t in self.tasks:
      if t.name.lower() == name.lower():
        return t
    raise SuiteError(f"{self.name}: no task {name!r}; its tasks are "
                     f"{', '.join(t.name for t in self.tasks)}")
