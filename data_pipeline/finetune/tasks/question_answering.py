"""Extractive question answering, text side.

Reads SQuAD-format JSON / JSONL (`squad.py`), cuts contexts into windows (`qa_windows.py`:
one model row per window, several per question), turns the rows' start / end logits into
answers (`qa_postprocess.py`) and writes the official prediction files:

  <stem>.json                    {question id: answer text}: what the official
                                 evaluate-v2.0.py / CMRC 2018 scripts score
  <prefix>nbest_predictions.json {id: [{text, probability, start_logit, end_logit}]}
  <prefix>null_odds.json         {id: null score - best span score} (v2.0; the
                                 official script's --na-prob-file)

where the loop's stem is `OUT/predictions` (prefix "") for `predict_file` and
`OUT/eval_predictions` (prefix "eval_") for the eval file, as transformers'
run_qa names its eval files.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from data_pipeline import fileio
from data_pipeline.finetune import qa_postprocess
from data_pipeline.finetune import qa_windows
from data_pipeline.finetune import squad
from data_pipeline.finetune.tasks import base
from data_pipeline.text import scripts as text_scripts


@dataclasses.dataclass
class EncodedQA:
  """A QA file, read and windowed. `items` are the questions (one prediction each);
  `arrays` the model rows (windows); `alignment` the row -> question map, offsets
  and max-context masks (`qa_windows.QAFeatures`)."""
  path: str
  items: list
  arrays: dict[str, np.ndarray]
  alignment: qa_windows.QAFeatures
  qa_file: squad.QAFile

  @property
  def labelled(self) -> bool:
    return "start_positions" in self.arrays

  def __len__(self):
    return len(self.items)


@dataclasses.dataclass(frozen=True)
class QAReferences:
  """What the model side scores against: gold texts per id and the scoring rule."""
  golds: dict[str, list[str]]
  metric: str                 # "squad" or "cmrc"
  version_2_with_negative: bool
  bad_answers: int            # answers whose offsets did not match (not trained on)


class QuestionAnsweringText(base.TextTask):
  """The fine-tuning loop's text side for `--task=qa`. qa_metric: "squad", "cmrc" (CMRC
  2018 / DRCD), or "auto": "cmrc" when the contexts are mostly CJK (`auto_metric`)."""
  name = "qa"
  OPTIONS = ("version_2_with_negative", "doc_stride", "max_query_length", "n_best_size",
             "max_answer_length", "null_score_diff_threshold", "qa_metric")

  def __init__(self, **options):
    super().__init__(**options)
    o = self.options
    if o.qa_metric not in ("auto", "squad", "cmrc"):
      raise ValueError(f"qa_metric={o.qa_metric!r}: expected 'auto', 'squad' or 'cmrc'")
    for name in ("doc_stride", "max_query_length", "n_best_size", "max_answer_length"):
      if getattr(o, name) <= 0:
        raise ValueError(f"{name}={getattr(o, name)}: must be positive")

  def read(self, path: str, labelled: bool) -> list:
    qa_file = squad.read_qa_file(
        path, version_2_with_negative=self.options.version_2_with_negative, labelled=labelled)
    if qa_file.bad_answers:
      logging.warning("%s", qa_file.report())
    # The file rides along with its examples, so that encode can report on it.
    return _QAItems(qa_file)

  def label_list(self, train_items, given):
    return []  # spans, not labels

  def encode(self, path, items, tokenizer, label_list, max_seq_length) -> EncodedQA:
    o = self.options
    qa_file = items.qa_file if isinstance(items, _QAItems) else squad.QAFile(
        path, list(items), [])
    labelled = any(e.answers or e.is_impossible for e in qa_file.examples)
    features = qa_windows.encode_qa_examples(
        qa_file.examples, tokenizer, max_seq_length=max_seq_length, doc_stride=o.doc_stride,
        max_query_length=o.max_query_length, labels=labelled)
    if features.skipped:
      logging.warning("%s: %d answerable question(s) without a verified answer are not trained "
                      "on (first: %s)", path, len(features.skipped), features.skipped[0])
    if features.answer_outside_windows:
      logging.warning("%s: %d answer(s) are longer than a window (max_seq_length=%d) and are "
                      "labelled [CLS] everywhere (first: %s)", path,
                      len(features.answer_outside_windows), max_seq_length,
                      features.answer_outside_windows[0])
    logging.info("%s: %d questions in %d windows of %d tokens", path, len(qa_file),
                 len(features), max_seq_length)
    return EncodedQA(path, list(qa_file.examples), features.arrays, features, qa_file)

  def _metric(self, encoded: EncodedQA) -> str:
    if self.options.qa_metric != "auto":
      return self.options.qa_metric
    return auto_metric(e.context for e in encoded.items[:200])

  def references(self, encoded: EncodedQA) -> QAReferences:
    return QAReferences(squad.gold_answers(encoded.qa_file), self._metric(encoded),
                        self.options.version_2_with_negative, len(encoded.qa_file.bad_answers))

  def decode(self, encoded: EncodedQA, outputs, label_list) -> qa_postprocess.QAPredictions:
    """Answers per question from the rows' {start_logits, end_logits} [N, L].

    Padding positions are set to -1e9 first, as length-bucketed prediction leaves them
    (bucketing.scatter_outputs): [PAD] never takes one of the n-best start/end slots, so
    the n-best lists are the same whatever the batch widths. (run_squad ranks padding
    too and then drops it, so where a model scores padding high its top-k holds fewer
    valid spans than ours.)"""
    o, f = self.options, encoded.alignment
    real = np.asarray(encoded.arrays["attention_mask"]) > 0
    start, end = (np.where(real, np.asarray(outputs[k]), np.float32(-1e9))
                  for k in ("start_logits", "end_logits"))
    return qa_postprocess.postprocess(
        [e.id for e in encoded.items], [e.context for e in encoded.items], f.example_index,
        f.offsets, f.is_max_context, start, end,
        qa_postprocess.PostprocessOptions(
            n_best_size=o.n_best_size, max_answer_length=o.max_answer_length,
            version_2_with_negative=o.version_2_with_negative,
            null_score_diff_threshold=o.null_score_diff_threshold))

  def write_predictions(self, stem: str, encoded: EncodedQA,
                        predictions: qa_postprocess.QAPredictions, label_list) -> str:
    directory, base = os.path.split(stem)
    prefix = base[:-len("predictions")] if base.endswith("predictions") else base + "_"
    path = stem + ".json"
    fileio.write_json_atomic(path, predictions.predictions)
    fileio.write_json_atomic(os.path.join(directory, prefix + "nbest_predictions.json"),
                          predictions.nbest)
    if self.options.version_2_with_negative:
      fileio.write_json_atomic(os.path.join(directory, prefix + "null_odds.json"),
                            predictions.null_odds)
    return path


# The share of ideographs and kana among the non-space characters above which
# `qa_metric=auto` scores the CMRC 2018 way.
CJK_METRIC_SHARE = 0.3


def auto_metric(contexts) -> str:
  """"cmrc" when ideographs and kana make up at least CJK_METRIC_SHARE of the contexts'
  non-space characters, else "squad". Kana count: Japanese has no spaces either, so the
  SQuAD F1 (whitespace tokens) would score a Japanese answer as one token, while the CMRC
  scorer splits it at every ideograph."""
  return "cmrc" if text_scripts.cjk_fraction("".join(contexts)) >= CJK_METRIC_SHARE else "squad"


class _QAItems(list):
  """The examples of a read file, with the file (its answer checks) attached."""

  def __init__(self, qa_file: squad.QAFile):
    super().__init__(qa_file.examples)
    self.qa_file = qa_file
