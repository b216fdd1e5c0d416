"""Classification of a text (or text pair) per CSV/TSV/JSONL row, text side.

Predictions: JSONL, one object per example: line, text (, text_pair), the predicted class
name and every class's probability (, the gold label when the file has one).
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from data_pipeline.fileio import write_text_atomic
from data_pipeline.finetune import readers
from data_pipeline.finetune.tasks import base


class ClassificationText(base.TextTask):
  """One label per row (regression.py's `RegressionText` reuses the reading and writing)."""
  name = "classification"
  OPTIONS = ("text_column", "text_pair_column", "label_column")

  def read(self, path: str, labelled: bool):
    o = self.options
    return readers.read_text_examples(path, task=self.name, text_column=o.text_column,
                                      text_pair_column=o.text_pair_column,
                                      label_column=o.label_column, labelled=labelled)

  def label_list(self, train_items, given: Sequence[str] | None) -> list[str] | None:
    if given:
      return list(given)
    if train_items is not None:
      return readers.infer_label_list(e.label for e in train_items)
    return None

  def encode(self, path, items, tokenizer, label_list, max_seq_length) -> base.EncodedFile:
    readers.check_labels(path, items, label_list)
    return self._encode(path, items, tokenizer, label_list, max_seq_length)

  def _encode(self, path, items, tokenizer, label_list, max_seq_length) -> base.EncodedFile:
    arrays = readers.encode_text_examples(items, tokenizer, max_seq_length, task=self.name,
                                          label_list=label_list)
    return base.EncodedFile(path, list(items), arrays)

  def references(self, encoded: base.EncodedFile):
    return encoded.arrays["labels"]

  def decode(self, encoded: base.EncodedFile, outputs: np.ndarray, label_list):
    return outputs  # one row per example already

  def _prediction(self, output, label_list) -> dict:
    return {"prediction": label_list[int(output.argmax())],
            "probabilities": {name: round(float(p), 6) for name, p in zip(label_list, output)}}

  def write_predictions(self, stem: str, encoded: base.EncodedFile, predictions: np.ndarray,
                        label_list) -> str:
    path = stem + ".jsonl"
    lines = []
    for ex, out in zip(encoded.items, predictions):
      row = {"line": ex.line, "text": ex.text}
      if ex.text_pair is not None:
        row["text_pair"] = ex.text_pair
      row.update(self._prediction(out, label_list))
      if ex.label is not None:
        row["label"] = ex.label
      lines.append(json.dumps(row, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
