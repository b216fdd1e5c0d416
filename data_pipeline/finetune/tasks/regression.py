"""Regression of a text (or text pair) per CSV/TSV/JSONL row, text side: a float label.

Predictions: JSONL, one object per example (line, text, the predicted value, the gold
value when the file has one), as `classification.py` writes them.
"""
from __future__ import annotations

from data_pipeline.finetune.tasks import base
from data_pipeline.finetune.tasks import classification


class RegressionText(classification.ClassificationText):
  """Read and written as classification rows; no label set, a value per row."""
  name = "regression"

  def label_list(self, train_items, given) -> list[str]:
    return []

  def encode(self, path, items, tokenizer, label_list, max_seq_length) -> base.EncodedFile:
    return self._encode(path, items, tokenizer, label_list, max_seq_length)

  def _prediction(self, output, label_list) -> dict:
    return {"prediction": float(output)}
