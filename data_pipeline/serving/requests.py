"""Requests of a served model: checked, encoded by the task's text side, answered by its
`decode` (no second implementation of what a task predicts).

Request bodies (JSON objects), per task:
  classification, regression  {"texts": [str, ...], "text_pairs": [str, ...]?}
  ner                         {"texts": [str, ...]}   (raw text: words are split here)
  qa                          {"questions": [str, ...], "contexts": [str, ...]}
  encoder                     {"texts": [str, ...]}

A request becomes `Prepared`: its model rows (the task's encoding at max_seq_length)
and `answer(row_predictions) -> JSON`. What each answer holds:
  classification  {"label", "probabilities": {label: p}, "truncated"}
  regression      {"value", "truncated"}
  ner             {"entities": [{"type", "text", "start", "end"}], "truncated"}
                  (start/end: [start, end) character offsets into the text)
  qa              {"answer", "start", "end", "score", "truncated"} ("" and -1 when the
                  model says the context holds no answer; score: the n-best probability)
  encoder         {"embedding": pooled output}
"truncated": the text did not fit in max_seq_length (classification / regression: the
tokens past it were not seen; ner: its last words were not tagged; qa: the question
was cut to max_query_length; a context of any length is read in windows).
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Any, Callable, Sequence

import numpy as np

from data_pipeline.finetune import readers
from data_pipeline.finetune import qa_windows
from data_pipeline.finetune import squad
from data_pipeline.finetune import tasks as text_tasks
from data_pipeline.text import scripts

ENCODER = "encoder"
_SOURCE = "<request>"


class RequestError(ValueError):
  """A request the service refuses: `status` (4xx) and the `field` it names."""

  def __init__(self, field: str, message: str, status: int = 422):
    super().__init__(f"{field}: {message}")
    self.field, self.status = field, status


@dataclasses.dataclass(frozen=True)
class Limits:
  max_texts: int = 64          # texts (questions) per request
  max_chars: int = 20_000      # characters per text (a QA context included)


@dataclasses.dataclass
class Prepared:
  """One request: its rows ([n, max_seq_length] int32 each) and how to answer it."""
  rows: dict[str, np.ndarray]
  answer: Callable[[Any], list[dict]]   # row predictions (NumPy pytree, [n, ...]) -> answers

  @property
  def num_rows(self) -> int:
    return len(self.rows["input_ids"])


def _strings(body: dict, key: str, limits: Limits, required: bool = True) -> list[str] | None:
  if key not in body:
    if required:
      raise RequestError(key, "missing (a list of strings)")
    return None
  value = body[key]
  if not isinstance(value, list):
    raise RequestError(key, f"expected a list of strings, got {type(value).__name__}")
  if not value:
    raise RequestError(key, "empty list")
  if len(value) > limits.max_texts:
    raise RequestError(key, f"{len(value)} items; at most {limits.max_texts} per request", 413)
  for i, s in enumerate(value):
    if not isinstance(s, str):
      raise RequestError(f"{key}[{i}]", f"expected a string, got {type(s).__name__}")
    if len(s) > limits.max_chars:
      raise RequestError(f"{key}[{i}]", f"{len(s)} characters; at most {limits.max_chars}", 413)
  return value


def _same_length(a: str, xs: list, b: str, ys: list) -> None:
  if len(xs) != len(ys):
    raise RequestError(b, f"{len(ys)} items, but {a} has {len(xs)}")


def split_words(text: str) -> list[tuple[str, int, int]]:
  """Words of raw text with [start, end) character offsets: whitespace separates words,
  and each punctuation mark and each CJK character is a word of its own (as CoNLL
  tokenisation and the character-level Chinese NER corpora have them)."""
  words = []
  for m in re.finditer(r"\S+", text):
    run = None
    for k, ch in enumerate(m.group(), m.start()):
      if scripts.is_cjk(ch) or unicodedata.category(ch).startswith("P"):
        if run is not None:
          words.append((text[run:k], run, k))
          run = None
        words.append((ch, k, k + 1))
      elif run is None:
        run = k
    if run is not None:
      words.append((text[run:m.end()], run, m.end()))
  return words


def entities(tags: Sequence[str], spans: Sequence[tuple[int, int]], text: str) -> list[dict]:
  """BIO(ES) word tags -> entities with character offsets (an I- tag that does not
  continue an entity of its type starts one, as seqeval reads IOB2)."""
  out, current = [], None
  for tag, (start, end) in zip(tags, spans):
    prefix, _, kind = tag.partition("-")
    if tag == "O" or not kind:
      current = None
      continue
    if prefix in ("B", "S") or current is None or current["type"] != kind:
      current = {"type": kind, "start": start, "end": end}
      out.append(current)
    else:
      current["end"] = end
    if prefix in ("E", "S"):
      current = None
  for e in out:
    e["text"] = text[e["start"]:e["end"]]
  return [{k: e[k] for k in ("type", "text", "start", "end")} for e in out]


class ServingText:
  """A served model's text side: `prepare(body) -> Prepared`."""

  def __init__(self, manifest: dict, tokenizer_dir: str, limits: Limits = Limits()):
    self.task = manifest["task"]
    self.labels = list(manifest.get("labels") or [])
    self.max_seq_length = int(manifest["max_seq_length"])
    self.limits = limits
    name = "classification" if self.task == ENCODER else self.task
    # Options the model directory did not record (an encoder's columns) are unused here:
    # requests carry texts, not files.
    recorded = manifest.get("text_options") or {}
    self.text = text_tasks.make_text_task(
        name, **{k: recorded.get(k) for k in text_tasks.options_of(name)})
    self.tokenizer = self.text.load_tokenizer(tokenizer_dir)
    if self.task == "qa":  # windows that cannot hold a context: refused at start-up
      qa_windows.check_lengths(self.max_seq_length, self.text.options.max_query_length,
                          self.text.options.doc_stride)
    self._prepare = {"classification": self._sequence, "regression": self._sequence,
                     ENCODER: self._sequence, "ner": self._ner, "qa": self._qa}[self.task]

  def prepare(self, body: Any) -> Prepared:
    if not isinstance(body, dict):
      raise RequestError("body", f"expected a JSON object, got {type(body).__name__}")
    return self._prepare(body)

  def _encode(self, items):
    return self.text.encode(_SOURCE, items, self.tokenizer, self.labels, self.max_seq_length)

  def _sequence(self, body: dict) -> Prepared:
    texts = _strings(body, "texts", self.limits)
    pairs = None if self.task == ENCODER else _strings(body, "text_pairs", self.limits, False)
    if pairs is not None:
      _same_length("texts", texts, "text_pairs", pairs)
    items = [readers.TextExample(t, pairs[i] if pairs else None, None, i + 1)
             for i, t in enumerate(texts)]
    encoded = self._encode(items)
    lengths = [len(a) + (len(b) + 1 if pairs else 0) + 2 for a, b in zip(
        self.tokenizer.encode_batch(texts),
        self.tokenizer.encode_batch(pairs) if pairs else [[]] * len(texts))]
    truncated = [n > self.max_seq_length for n in lengths]

    def answer(predictions) -> list[dict]:
      if self.task == ENCODER:
        return [{"embedding": [round(float(x), 6) for x in row]}
                for row in predictions["pooled_output"]]
      out = self.text.decode(encoded, predictions, self.labels)
      if self.task == "regression":
        return [{"value": float(v), "truncated": t} for v, t in zip(out, truncated)]
      return [{"label": self.labels[int(p.argmax())],
               "probabilities": {n: float(x) for n, x in zip(self.labels, p)},
               "truncated": t} for p, t in zip(out, truncated)]

    return Prepared(encoded.arrays, answer)

  def _ner(self, body: dict) -> Prepared:
    texts = _strings(body, "texts", self.limits)
    words = [split_words(t) for t in texts]
    items = [readers.TaggedSentence(tuple(w for w, _, _ in ws), None, i + 1)
             for i, ws in enumerate(words)]
    encoded = self._encode(items)

    def answer(tag_ids) -> list[dict]:
      tags = self.text.decode(encoded, np.asarray(tag_ids), self.labels)
      return [{"entities": entities(t, [(s, e) for _, s, e in ws], text),
               "truncated": len(encoded.alignment[i]) < len(ws)}
              for i, (t, ws, text) in enumerate(zip(tags, words, texts))]

    return Prepared(encoded.arrays, answer)

  def _qa(self, body: dict) -> Prepared:
    questions = _strings(body, "questions", self.limits)
    contexts = _strings(body, "contexts", self.limits)
    _same_length("questions", questions, "contexts", contexts)
    for key, values in (("questions", questions), ("contexts", contexts)):
      for i, v in enumerate(values):
        if not v.strip():
          raise RequestError(f"{key}[{i}]", "empty string")
    items = [squad.QAExample(str(i), q, c, (), False, f"{_SOURCE}:{i}")
             for i, (q, c) in enumerate(zip(questions, contexts))]
    encoded = self._encode(items)
    cut = self.text.options.max_query_length
    truncated = [len(ids) > cut for ids in self.tokenizer.encode_batch(questions)]

    def answer(predictions) -> list[dict]:
      out = self.text.decode(encoded, predictions, self.labels)
      answers = []
      for i in range(len(items)):
        qid = str(i)
        text = out.predictions[qid]
        k = next((j for j, e in enumerate(out.nbest[qid]) if e["text"] == text), 0)
        start, end = out.spans[qid][k]
        answers.append({"answer": text, "start": start, "end": end,
                        "score": float(out.nbest[qid][k]["probability"]),
                        "truncated": truncated[i]})
      return answers

    return Prepared(dict(encoded.arrays), answer)
