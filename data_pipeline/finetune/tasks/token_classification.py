"""Token classification (NER), text side: a tag per word, from CoNLL or JSONL.

A word's tag is read at its first sub-token. Predictions: CoNLL, `token tag` lines, a blank
line between sentences.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from data_pipeline.fileio import write_text_atomic
from data_pipeline.finetune import readers
from data_pipeline.finetune.tasks import base


class TokenClassificationText(base.TextTask):
  name = "ner"
  OPTIONS = ("tokens_key", "tags_key")

  def read(self, path: str, labelled: bool):
    return readers.read_tagged_sentences(path, labelled=labelled,
                                         tokens_key=self.options.tokens_key,
                                         tags_key=self.options.tags_key)

  def label_list(self, train_items, given: Sequence[str] | None) -> list[str] | None:
    if given:
      return list(given)
    if train_items is not None:
      return readers.infer_label_list((t for s in train_items for t in s.tags), ner=True)
    return None

  def encode(self, path, items, tokenizer, label_list, max_seq_length) -> base.EncodedFile:
    readers.check_labels(path, items, label_list)
    enc = readers.encode_tagged_sentences(items, tokenizer, max_seq_length,
                                          label_list=label_list)
    if enc.num_truncated_words:
      logging.warning("%s: %d words beyond max_seq_length=%d are not seen by the model "
                      "(predicted 'O')", path, enc.num_truncated_words, max_seq_length)
    return base.EncodedFile(path, list(items), enc.arrays, enc.word_positions)

  def references(self, encoded: base.EncodedFile):
    return [list(s.tags) for s in encoded.items]

  def decode(self, encoded: base.EncodedFile, tag_ids: np.ndarray,
             label_list) -> list[list[str]]:
    """Per sentence, one tag per word: read at each word's first sub-token; words cut
    off by max_seq_length get 'O'."""
    out = []
    for i, sentence in enumerate(encoded.items):
      pos = encoded.alignment[i]
      tags = [label_list[t] for t in tag_ids[i, pos]]
      out.append(tags + ["O"] * (len(sentence.tokens) - len(tags)))
    return out

  def write_predictions(self, stem: str, encoded: base.EncodedFile, predictions,
                        label_list) -> str:
    path = stem + ".conll"
    lines = []
    for sentence, tags in zip(encoded.items, predictions):
      lines.extend(f"{tok} {tag}" for tok, tag in zip(sentence.tokens, tags))
      lines.append("")
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
