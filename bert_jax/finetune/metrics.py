"""Fine-tuning evaluation metrics in plain NumPy: GLUE's and CoNLL's.

Classification: accuracy, F1 (binary, for one positive class, and macro over
classes), Matthews correlation (multi-class, as sklearn's `matthews_corrcoef`),
and a per-class precision / recall / F1 / support report. Regression: Pearson
and Spearman (average ranks for ties) correlations. NER: entity-level
precision / recall / F1 over BIO tags with seqeval's default (conlleval)
semantics: an entity starts at a B- tag, or at an I- tag that does not continue
an entity of the same type; it ends where the next tag does not continue it.
No scikit-learn or scipy needed: both are heavy for what these formulas are.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_1d(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
  return x


def _check_pair(y_true, y_pred):
  y_true, y_pred = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
  if y_true.shape != y_pred.shape:
    raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
  if not y_true.size:
    raise ValueError("no examples to score")
  return y_true, y_pred


def _safe_div(num: float, den: float) -> float:
  # sklearn's zero_division=0: an undefined ratio (no predictions / no support) counts as 0.
  return float(num) / float(den) if den else 0.0


def _f1(precision: float, recall: float) -> float:
  return _safe_div(2 * precision * recall, precision + recall)


def accuracy(y_true, y_pred) -> float:
  y_true, y_pred = _check_pair(y_true, y_pred)
  return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
  """[num_classes, num_classes] int64 counts; rows are true classes, columns predictions."""
  y_true, y_pred = _check_pair(y_true, y_pred)
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
  return cm


def per_class_scores(y_true, y_pred, num_classes: int) -> dict[str, np.ndarray]:
  """precision, recall, f1 (float64) and support (int64), each [num_classes]."""
  cm = confusion_matrix(y_true, y_pred, num_classes)
  tp = np.diag(cm).astype(np.float64)
  predicted, support = cm.sum(0), cm.sum(1)
  precision = np.array([_safe_div(t, p) for t, p in zip(tp, predicted)])
  recall = np.array([_safe_div(t, s) for t, s in zip(tp, support)])
  f1 = np.array([_f1(p, r) for p, r in zip(precision, recall)])
  return dict(precision=precision, recall=recall, f1=f1, support=support)


def f1_binary(y_true, y_pred, positive: int = 1) -> float:
  """F1 of the `positive` class (GLUE's MRPC / QQP F1)."""
  y_true, y_pred = _check_pair(y_true, y_pred)
  tp = np.sum((y_pred == positive) & (y_true == positive))
  precision = _safe_div(tp, np.sum(y_pred == positive))
  recall = _safe_div(tp, np.sum(y_true == positive))
  return _f1(precision, recall)


def f1_macro(y_true, y_pred, num_classes: int) -> float:
  """Unweighted mean of per-class F1 over all `num_classes` classes."""
  return float(np.mean(per_class_scores(y_true, y_pred, num_classes)["f1"]))


def matthews_corrcoef(y_true, y_pred, num_classes: int) -> float:
  """Multi-class Matthews correlation (Gorodkin's R_K); 0.0 when undefined."""
  cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
  t, p = cm.sum(1), cm.sum(0)
  c, s = np.trace(cm), cm.sum()
  cov_ytyp = c * s - np.dot(t, p)
  cov_ypyp = s * s - np.dot(p, p)
  cov_ytyt = s * s - np.dot(t, t)
  den = np.sqrt(cov_ytyt * cov_ypyp)
  return float(cov_ytyp / den) if den else 0.0


def pearson(x, y) -> float:
  x, y = _check_pair(np.asarray(x, np.float64), np.asarray(y, np.float64))
  xc, yc = x - x.mean(), y - y.mean()
  den = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
  return float(np.dot(xc, yc) / den) if den else 0.0


def rankdata(x) -> np.ndarray:
  """1-based ranks; tied values share the mean of their ranks (scipy's 'average')."""
  x = _as_1d(x, "x")
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  # Group boundaries of equal values in sorted order.
  starts = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
  group = np.cumsum(starts) - 1
  first = np.flatnonzero(starts)
  last = np.concatenate([first[1:], [len(x)]]) - 1
  avg = (first + last) / 2.0 + 1.0
  ranks = np.empty(len(x), np.float64)
  ranks[order] = avg[group]
  return ranks


def spearman(x, y) -> float:
  x, y = _check_pair(np.asarray(x, np.float64), np.asarray(y, np.float64))
  return pearson(rankdata(x), rankdata(y))


# ----------------------------------------------------------------------------- NER


def _split_tag(tag: str) -> tuple[str, str]:
  """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''); a bare type 'PER' counts as I-PER."""
  if tag in ("O", ""):
    return "O", ""
  if len(tag) > 1 and tag[1] in "-_" and tag[0] in "BIES":
    return tag[0], tag[2:]
  return "I", tag


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
  """(type, start, end_inclusive) chunks of one BIO sequence, conlleval style.

  Also accepts IOBES prefixes (E- and S- close / are single-token chunks).
  """
  chunks = []
  start, current = None, ""
  prev_prefix = "O"
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, kind = _split_tag(tag)
    # Does the chunk in progress end before token i?
    if current and (prefix in ("O", "B", "S") or kind != current or prev_prefix in ("E", "S")):
      chunks.append((current, start, i - 1))
      current = ""
    # Does a chunk start at token i?
    if prefix != "O" and not current:
      start, current = i, kind
    prev_prefix = prefix
  return chunks


def entity_scores(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]
                  ) -> dict:
  """Micro precision / recall / F1 over exact-match entities, plus per-type scores.

  Returns {"precision", "recall", "f1", "per_type": {type: {precision, recall, f1,
  support}}}; support is the number of true entities of that type.
  """
  if len(true_seqs) != len(pred_seqs):
    raise ValueError(f"{len(true_seqs)} true sequences but {len(pred_seqs)} predicted")
  true_set, pred_set = set(), set()
  for n, (t, p) in enumerate(zip(true_seqs, pred_seqs)):
    if len(t) != len(p):
      raise ValueError(f"sequence {n}: {len(t)} true tags but {len(p)} predicted")
    true_set.update((n,) + e for e in entities(t))
    pred_set.update((n,) + e for e in entities(p))
  types = sorted({e[1] for e in true_set | pred_set})
  per_type = {}
  for kind in types:
    t = {e for e in true_set if e[1] == kind}
    p = {e for e in pred_set if e[1] == kind}
    precision, recall = _safe_div(len(t & p), len(p)), _safe_div(len(t & p), len(t))
    per_type[kind] = dict(precision=precision, recall=recall, f1=_f1(precision, recall),
                          support=len(t))
  hits = len(true_set & pred_set)
  precision, recall = _safe_div(hits, len(pred_set)), _safe_div(hits, len(true_set))
  return dict(precision=precision, recall=recall, f1=_f1(precision, recall), per_type=per_type)


# ----------------------------------------------------------------------------- reports


def report_table(rows: dict[str, dict[str, float]]) -> str:
  """A fixed-width table: one row per class, columns precision, recall, f1, support."""
  width = max([len("class")] + [len(name) for name in rows])
  lines = [f"{'class':<{width}}  precision     recall         f1    support"]
  for name, r in rows.items():
    lines.append(f"{name:<{width}}  {r['precision']:9.4f}  {r['recall']:9.4f}  "
                 f"{r['f1']:9.4f}  {int(r['support']):9d}")
  return "\n".join(lines)


def classification_metrics(y_true, y_pred, label_names: Sequence[str]) -> tuple[dict, str]:
  """GLUE-style metrics for class ids against `label_names`, and the report table.

  `f1` is the binary F1 of class 1 when there are two classes (MRPC, QQP), the
  macro F1 otherwise; `f1_macro` is always there.
  """
  k = len(label_names)
  scores = per_class_scores(y_true, y_pred, k)
  metrics = dict(accuracy=accuracy(y_true, y_pred),
                 f1_macro=float(np.mean(scores["f1"])),
                 mcc=matthews_corrcoef(y_true, y_pred, k))
  metrics["f1"] = f1_binary(y_true, y_pred, 1) if k == 2 else metrics["f1_macro"]
  rows = {name: {m: scores[m][i] for m in ("precision", "recall", "f1", "support")}
          for i, name in enumerate(label_names)}
  return metrics, report_table(rows)


def regression_metrics(y_true, y_pred) -> tuple[dict, str]:
  y_true = np.asarray(y_true, np.float64)
  y_pred = np.asarray(y_pred, np.float64)
  metrics = dict(pearson=pearson(y_true, y_pred), spearman=spearman(y_true, y_pred),
                 mse=float(np.mean((y_true - y_pred) ** 2)))
  metrics["corr"] = (metrics["pearson"] + metrics["spearman"]) / 2  # GLUE's STS-B score
  table = "\n".join(f"{k:<8} {v:9.4f}" for k, v in metrics.items())
  return metrics, table


def ner_metrics(true_seqs, pred_seqs) -> tuple[dict, str]:
  scores = entity_scores(true_seqs, pred_seqs)
  flat_true = [t for s in true_seqs for t in s]
  flat_pred = [t for s in pred_seqs for t in s]
  metrics = dict(precision=scores["precision"], recall=scores["recall"], f1=scores["f1"],
                 token_accuracy=float(np.mean([a == b for a, b in zip(flat_true, flat_pred)]))
                 if flat_true else 0.0)
  rows = dict(scores["per_type"])
  rows["micro avg"] = dict(precision=scores["precision"], recall=scores["recall"],
                           f1=scores["f1"],
                           support=sum(r["support"] for r in scores["per_type"].values()))
  return metrics, report_table(rows)
