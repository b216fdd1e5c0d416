"""GLUE as its download script lays it out: one folder per task of TSVs.

  CoLA/   train.tsv, dev.tsv WITHOUT a header: source, label, mark (the original
          annotation), sentence; test.tsv with a header: index, sentence
  SST-2/  sentence, label;                         test: index, sentence
  MRPC/   Quality, #1 ID, #2 ID, #1 String, #2 String;  test: index, #1 ID, #2 ID, #1 String,
          #2 String
  STS-B/  index, genre, ..., sentence1, sentence2, score (0-5, regression);  test: no score
  QQP/    id, qid1, qid2, question1, question2, is_duplicate; a few rows of train / dev have
          too few fields (a question with a newline): skipped and counted, as GLUE's own
          loaders do;  test: id, question1, question2
  MNLI/   train.tsv, dev_matched.tsv, dev_mismatched.tsv (sentence1, sentence2, gold_label),
          test_matched.tsv, test_mismatched.tsv (index, ..., sentence1, sentence2)
  QNLI/   index, question, sentence, label;        test: index, question, sentence
  RTE/, WNLI/  index, sentence1, sentence2, label; test: index, sentence1, sentence2
  diagnostic/diagnostic.tsv (AX): index, sentence1, sentence2; predicted with the MNLI model

Leaderboard columns: CoLA Matthews corr.; SST-2 acc.; MRPC F1 / acc.; STS-B Pearson /
Spearman; QQP F1 / acc.; MNLI-m / MNLI-mm acc.; QNLI, RTE, WNLI acc. (x100). The GLUE score
(Wang et al., ICLR 2019, section 4, and the gluebenchmark.com leaderboard): a task with two
metrics scores their unweighted mean (MNLI: the mean of matched and mismatched), and the
score is the unweighted mean over the nine tasks. Here it is computed on the dev sets (the
test labels are the server's).

Submission (gluebenchmark.com): one TSV per task, `index<TAB>prediction` under a header,
in the test file's order: CoLA.tsv, SST-2.tsv, MRPC.tsv, STS-B.tsv, QQP.tsv, MNLI-m.tsv,
MNLI-mm.tsv, QNLI.tsv, RTE.tsv, WNLI.tsv, AX.tsv; labels as GLUE names them (0 / 1;
entailment / neutral / contradiction; entailment / not_entailment), STS-B's score a number
in [0, 5].
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os

from data_pipeline.fileio import write_text_atomic
from data_pipeline.finetune.suites import base
from data_pipeline.finetune.suites.base import Column, Extra, Prepared, SuiteError

COLA_COLUMNS = ("source", "label", "mark", "sentence")


@dataclasses.dataclass(frozen=True)
class _Fields:
  """Where a sequence task's text, pair, label and test id are."""
  text: str
  pair: str | None
  label: str
  labels: tuple[str, ...] | None       # None: regression
  test_id: str = "index"
  headerless: tuple[str, ...] | None = None  # train / dev columns when they have no header
  skip_malformed: bool = False
  best: str | None = None              # the eval metric that picks each run's best epoch


def _read_split(path: str, f: _Fields, labelled: bool, headerless: bool = False):
  needed = [f.text] + ([f.pair] if f.pair else []) + ([f.label] if labelled else [f.test_id])
  rows, skipped = base.read_tsv(path, needed, header=not headerless,
                                names=f.headerless if headerless else None,
                                skip_malformed=f.skip_malformed and labelled)
  return rows, skipped


def _convert(f: _Fields, rows: list[dict], labelled: bool) -> list[dict]:
  return base.text_rows(rows, lambda r: r[f.text], (lambda r: r[f.pair]) if f.pair else None,
                        labelled, lambda r: r[f.label].strip())


def _prepare_sequence(f: _Fields, layout, paths: dict, work_dir: str) -> Prepared:
  """Train / dev / test TSVs as the sequence tasks' JSONL (`text`, `text_pair`, `label`)."""
  notes = []
  split_rows = {}
  for split in ("train", "dev"):
    rows, skipped = _read_split(paths[split], f, True, headerless=f.headerless is not None)
    if skipped:
      notes.append(f"{os.path.basename(paths[split])}: {skipped} malformed row(s) skipped")
      logging.warning("%s: %s", layout.name, notes[-1])
    split_rows[split] = rows
  if f.labels is not None:
    labels_of = {s: [{"label": r[f.label].strip()} for r in rows]
                 for s, rows in split_rows.items()}
    base.check_dev_labels(layout, labels_of["train"], labels_of["dev"], paths, f.labels)
  else:
    for split, rows in split_rows.items():
      _check_numbers(paths[split], rows, f.label)
  os.makedirs(work_dir, exist_ok=True)
  out = {s: base.write_jsonl(os.path.join(work_dir, f"{s}.jsonl"), _convert(f, r, True))
         for s, r in split_rows.items()}
  test, ids = _prepare_test(f, layout, paths.get("test"), os.path.join(work_dir, "test.jsonl"))
  kind = "classification" if f.labels is not None else "regression"
  options = dict(base.SEQUENCE_OPTIONS if f.pair else base.SINGLE_OPTIONS)
  if f.best:  # the leaderboard's metric, where it is not the task's default (accuracy)
    options["metric_for_best"] = f.best
  return Prepared(kind, out["train"], out["dev"], test, options, f.labels, ids, notes=notes)


def _check_numbers(path, rows, column):
  for r in rows:
    try:
      float(r[column])
    except ValueError:
      raise SuiteError(f"{path}:{r['_line']}: {column} {r[column]!r} is not a number") from None


def _prepare_test(f: _Fields, layout, path: str | None, out: str):
  if path is None:
    return None, []
  rows, _ = _read_split(path, f, False)
  ids = base.require_ids(layout, rows, f.test_id, path)
  return base.write_jsonl(out, _convert(f, rows, False)), ids


def _prepare_cola(layout, paths, work_dir):
  f = _Fields("sentence", None, "label", ("0", "1"), headerless=COLA_COLUMNS, best="mcc")
  first = open(paths["train"], encoding="utf-8", errors="replace").readline().split("\t")
  if [c.strip() for c in first] == list(COLA_COLUMNS) or "sentence" in [c.strip() for c in first]:
    raise SuiteError(f"{paths['train']}:1: CoLA's train / dev files have no header; their four "
                     f"columns are {', '.join(COLA_COLUMNS)} (this file has a header row)")
  return _prepare_sequence(f, layout, paths, work_dir)


def _prepare_mnli(layout, paths, work_dir):
  f = _Fields("sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"))
  prepared = _prepare_sequence(f, layout, paths, work_dir)
  folder = paths["folder"]
  mm_dev = os.path.join(folder, "dev_mismatched.tsv")
  if not os.path.exists(mm_dev):
    raise SuiteError(f"MNLI: no dev_mismatched.tsv in {folder} (MNLI-mm is scored on it)")
  rows, _ = _read_split(mm_dev, f, True)
  bad = sorted({r["gold_label"] for r in rows} - set(f.labels))
  if bad:
    raise SuiteError(f"{mm_dev}: label(s) {bad} do not occur in {paths['train']}")
  mm = base.write_jsonl(os.path.join(work_dir, "dev_mm.jsonl"), _convert(f, rows, True))
  mm_test, mm_ids = _prepare_test(f, layout, _existing(os.path.join(folder, "test_mismatched.tsv")),
                                  os.path.join(work_dir, "test_mm.jsonl"))
  prepared.extras.append(Extra("mm", mm, mm_test))
  prepared.extra_ids["mm"] = mm_ids
  ax_path = _existing(os.path.join(os.path.dirname(folder), "diagnostic", "diagnostic.tsv"))
  if ax_path is not None:
    ax, ax_ids = _prepare_test(f, layout, ax_path, os.path.join(work_dir, "ax.jsonl"))
    prepared.extras.append(Extra("ax", None, ax))
    prepared.extra_ids["ax"] = ax_ids
  return prepared


def _existing(path):
  return path if os.path.exists(path) else None


def _write_tsv(path: str, ids: list, values: list) -> str:
  write_text_atomic(path, "index\tprediction\n" + "".join(f"{i}\t{v}\n" for i, v in zip(ids, values)))
  return path


def _values(predictions_path: str, regression: bool) -> list:
  rows = base.read_predictions(predictions_path)
  if regression:  # GLUE's STS-B scores lie in [0, 5]
    return [f"{min(max(r['prediction'], 0.0), 5.0):.3f}" for r in rows]
  return [r["prediction"] for r in rows]


def _submit(layout, prepared: Prepared, predictions: dict, out_dir: str,
            names=None) -> list[str]:
  """`names`: {prediction split: submission file stem} (default {"test": layout.name})."""
  names = names or {"test": layout.name}
  written = []
  for split, stem in names.items():
    if predictions.get(split) is None:
      continue
    ids = prepared.test_ids if split == "test" else prepared.extra_ids[split]
    values = _values(predictions[split], prepared.kind == "regression")
    if len(values) != len(ids):
      raise SuiteError(f"{layout.name}: {len(values)} predictions for {len(ids)} test ids")
    written.append(_write_tsv(os.path.join(out_dir, f"{stem}.tsv"), ids, values))
  return written


def _sequence(name, fields: _Fields, columns, **kw) -> base.TaskLayout:
  return base.TaskLayout(name, (name,), (("train.tsv",), ("dev.tsv",), ("test.tsv",)),
                         lambda layout, paths, work: _prepare_sequence(fields, layout, paths, work),
                         columns, _submit, **kw)


ACC = (Column("Acc", "accuracy"),)
F1_ACC = (Column("F1", "f1"), Column("Acc", "accuracy"))
BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")

TASKS = (
    base.TaskLayout("CoLA", ("CoLA",), (("train.tsv",), ("dev.tsv",), ("test.tsv",)),
                    _prepare_cola, (Column("MCC", "mcc"),), _submit),
    _sequence("SST-2", _Fields("sentence", None, "label", BINARY), ACC),
    _sequence("MRPC", _Fields("#1 String", "#2 String", "Quality", BINARY, best="f1"), F1_ACC),
    _sequence("STS-B", _Fields("sentence1", "sentence2", "score", None, best="corr"),
              (Column("Pearson", "pearson"), Column("Spearman", "spearman"))),
    _sequence("QQP", _Fields("question1", "question2", "is_duplicate", BINARY, test_id="id",
                             skip_malformed=True, best="f1"), F1_ACC),
    base.TaskLayout("MNLI", ("MNLI",), (("train.tsv",), ("dev_matched.tsv",),
                                        ("test_matched.tsv",)),
                    _prepare_mnli, (Column("MNLI-m", "accuracy"),
                                    Column("MNLI-mm", "accuracy", split="mm")),
                    functools.partial(_submit, names={"test": "MNLI-m", "mm": "MNLI-mm",
                                                      "ax": "AX"})),
    _sequence("QNLI", _Fields("question", "sentence", "label", NLI2), ACC),
    _sequence("RTE", _Fields("sentence1", "sentence2", "label", NLI2), ACC),
    _sequence("WNLI", _Fields("sentence1", "sentence2", "label", BINARY), ACC),
)

GLUE = base.Suite(
    "GLUE", TASKS,
    "GLUE score (Wang et al., ICLR 2019, section 4; gluebenchmark.com): each task's score is "
    "the unweighted mean of its metrics (MRPC, QQP: F1 and accuracy; STS-B: Pearson and "
    "Spearman; MNLI: matched and mismatched accuracy), and the GLUE score is the unweighted "
    "mean of the nine task scores. Computed here on the dev sets.")
