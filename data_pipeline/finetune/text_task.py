"""The text side of each fine-tuning task: reading, encoding, decoding, prediction files.

The fine-tuning loop (`bert_jax.finetune.loop.run(config, text)`) is handed one of these by
the launcher (`make_text_task`); it never imports this package. The model side of
each task (head, loss, row predictions, scoring) is `bert_jax.finetune.tasks`; a task has one
entry here and one there, under the same name.

A text task provides (duck typed; `TextTask` is the common base):
  load_tokenizer(directory) / export_tokenizer(tokenizer, directory, model_max_length)
  read(path, labelled)                     -> items (examples / sentences, with line numbers)
  label_list(train_items, given)           -> the label names, or None: ask the checkpoint
  encode(path, items, tokenizer, label_list, max_seq_length) -> EncodedFile
  references(encoded)                      -> what `Task.score` compares against
  decode(encoded, row_outputs, label_list) -> per-example predictions (rows aggregated)
  write_predictions(stem, encoded, predictions, label_list) -> the file written
  meta()                                   -> JSON-able reading options for finetune.json
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Sequence

import numpy as np

from data_pipeline.finetune import readers as fd
from data_pipeline.fileio import write_text_atomic
from data_pipeline.text import hf_tokenizer
from data_pipeline.text import tokenizer as tokenizers_lib


@dataclasses.dataclass
class EncodedFile:
  """One file, read and encoded. `items` are the examples (one per prediction);
  `arrays` the model's input rows ([N, ...] each; `labels` when labelled);
  `alignment` whatever `decode` needs to map rows back to items (NER: per sentence,
  the positions of each word's first sub-token)."""
  path: str
  items: list
  arrays: dict[str, np.ndarray]
  alignment: Any = None

  @property
  def labelled(self) -> bool:
    return "labels" in self.arrays

  def __len__(self):
    return len(self.items)


@dataclasses.dataclass(frozen=True)
class TextOptions:
  """How input files are read: CSV/TSV/JSONL columns; JSONL keys for NER; QA's
  windows and answer selection (BERT's run_squad.py defaults; see `qa_text`)."""
  text_column: str = "sentence"
  text_pair_column: str | None = None
  label_column: str = "label"
  tokens_key: str = "tokens"
  tags_key: str = "tags"
  version_2_with_negative: bool = False
  doc_stride: int = 128
  max_query_length: int = 64
  n_best_size: int = 20
  max_answer_length: int = 30
  null_score_diff_threshold: float = 0.0
  qa_metric: str = "auto"


class TextTask:
  """Shared pieces: the tokenizer of a checkpoint directory and its export."""
  name: str

  def __init__(self, options: TextOptions = TextOptions()):
    self.options = options

  def load_tokenizer(self, directory: str):
    return tokenizers_lib.load_tokenizer(directory)

  def export_tokenizer(self, tokenizer, directory: str, model_max_length: int) -> None:
    hf_tokenizer.export_tokenizer(tokenizer, directory, model_max_length=model_max_length)

  def meta(self) -> dict:
    o = self.options
    return dict(text_column=o.text_column, text_pair_column=o.text_pair_column,
                label_column=o.label_column)


class SequenceText(TextTask):
  """Classification or regression of a text (or text pair) per CSV/TSV/JSONL row.
  Predictions: JSONL, one object per example (class name and probabilities, or value)."""

  def __init__(self, name: str, options: TextOptions = TextOptions()):
    super().__init__(options)
    self.name = name

  def read(self, path: str, labelled: bool):
    o = self.options
    return fd.read_text_examples(path, task=self.name, text_column=o.text_column,
                                 text_pair_column=o.text_pair_column,
                                 label_column=o.label_column, labelled=labelled)

  def label_list(self, train_items, given: Sequence[str] | None) -> list[str] | None:
    if self.name == "regression":
      return []
    if given:
      return list(given)
    if train_items is not None:
      return fd.infer_label_list(e.label for e in train_items)
    return None

  def encode(self, path, items, tokenizer, label_list, max_seq_length) -> EncodedFile:
    if self.name == "classification":
      fd.check_labels(path, items, label_list)
    arrays = fd.encode_text_examples(items, tokenizer, max_seq_length, task=self.name,
                                     label_list=label_list)
    return EncodedFile(path, list(items), arrays)

  def references(self, encoded: EncodedFile):
    return encoded.arrays["labels"]

  def decode(self, encoded: EncodedFile, outputs: np.ndarray, label_list):
    return outputs  # one row per example already

  def write_predictions(self, stem: str, encoded: EncodedFile, predictions: np.ndarray,
                        label_list) -> str:
    path = stem + ".jsonl"
    lines = []
    for ex, out in zip(encoded.items, predictions):
      row = {"line": ex.line, "text": ex.text}
      if ex.text_pair is not None:
        row["text_pair"] = ex.text_pair
      if self.name == "regression":
        row["prediction"] = float(out)
      else:
        row["prediction"] = label_list[int(out.argmax())]
        row["probabilities"] = {name: round(float(p), 6) for name, p in zip(label_list, out)}
      if ex.label is not None:
        row["label"] = ex.label
      lines.append(json.dumps(row, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


class TaggingText(TextTask):
  """A tag per word (NER) from CoNLL or JSONL; a word's tag is read at its first
  sub-token. Predictions: CoNLL, `token tag` lines, a blank line between sentences."""
  name = "ner"

  def read(self, path: str, labelled: bool):
    return fd.read_tagged_sentences(path, labelled=labelled, tokens_key=self.options.tokens_key,
                                    tags_key=self.options.tags_key)

  def label_list(self, train_items, given: Sequence[str] | None) -> list[str] | None:
    if given:
      return list(given)
    if train_items is not None:
      return fd.infer_label_list((t for s in train_items for t in s.tags), ner=True)
    return None

  def encode(self, path, items, tokenizer, label_list, max_seq_length) -> EncodedFile:
    fd.check_labels(path, items, label_list)
    enc = fd.encode_tagged_sentences(items, tokenizer, max_seq_length, label_list=label_list)
    if enc.num_truncated_words:
      logging.warning("%s: %d words beyond max_seq_length=%d are not seen by the model "
                      "(predicted 'O')", path, enc.num_truncated_words, max_seq_length)
    return EncodedFile(path, list(items), enc.arrays, enc.word_positions)

  def references(self, encoded: EncodedFile):
    return [list(s.tags) for s in encoded.items]

  def decode(self, encoded: EncodedFile, tag_ids: np.ndarray, label_list) -> list[list[str]]:
    """Per sentence, one tag per word: read at each word's first sub-token; words cut
    off by max_seq_length get 'O'."""
    out = []
    for i, sentence in enumerate(encoded.items):
      pos = encoded.alignment[i]
      tags = [label_list[t] for t in tag_ids[i, pos]]
      out.append(tags + ["O"] * (len(sentence.tokens) - len(tags)))
    return out

  def write_predictions(self, stem: str, encoded: EncodedFile, predictions, label_list) -> str:
    path = stem + ".conll"
    lines = []
    for sentence, tags in zip(encoded.items, predictions):
      lines.extend(f"{tok} {tag}" for tok, tag in zip(sentence.tokens, tags))
      lines.append("")
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _question_answering(options: TextOptions) -> TextTask:
  # Imported here: qa_text builds on this module's TextTask.
  from data_pipeline.finetune.tasks import question_answering as qa_text  # pylint: disable=import-outside-toplevel
  return qa_text.QuestionAnsweringText(options)


def _multiple_choice(options: TextOptions) -> TextTask:
  from data_pipeline.finetune.tasks import multiple_choice as mc_text  # pylint: disable=import-outside-toplevel
  return mc_text.MultipleChoiceText(options)


TEXT_TASKS = {"classification": lambda o: SequenceText("classification", o),
              "regression": lambda o: SequenceText("regression", o),
              "ner": TaggingText,
              "qa": _question_answering,
              "multiple_choice": _multiple_choice}


def make_text_task(name: str, **options) -> TextTask:
  """The text side of task `name`, reading files per `options` (TextOptions' fields)."""
  if name not in TEXT_TASKS:
    raise ValueError(f"task={name!r}: no text side; known: {tuple(TEXT_TASKS)}")
  return TEXT_TASKS[name](TextOptions(**options))
