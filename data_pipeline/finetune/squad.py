"""Extractive QA files: SQuAD-format JSON and JSONL in, checked questions out.

Files
  * SQuAD JSON (v1.1 and v2.0): `{"data": [{"title", "paragraphs": [{"context",
    "qas": [{"id", "question", "answers": [{"text", "answer_start"}],
    "is_impossible"}]}]}]}`. CMRC 2018 and DRCD (Chinese) ship in this layout.
  * JSONL, one question per line, the Hugging Face `datasets` layout:
    `{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}`
    (optionally "title", "is_impossible").

Checks. Malformed JSON is an error naming file, line and column; a question
without an id, a duplicate id, an empty context or question, a file with
unanswerable questions read without `version_2_with_negative`, an answerable
question without answers: errors naming the file and where in it. Every answer
is verified (`context[answer_start:answer_start + len(text)] == text`); a
mismatch is counted and listed with its question id in `QAFile.bad_answers`,
and an answerable question left with no verified answer is not trained on
(its windows weigh 0, `QAFeatures.skipped`), though it is still evaluated (gold
texts are scored by text, offsets or not).

Windows over the contexts: `qa_windows.py`. Never imports jax.
"""
from __future__ import annotations

import dataclasses
import json
import os


class QADataError(ValueError):
  """A QA file is malformed; the message names the file and where in it."""


@dataclasses.dataclass(frozen=True)
class QAAnswer:
  text: str
  start: int | None        # character offset in the context (None: not given)


@dataclasses.dataclass(frozen=True)
class QAExample:
  id: str
  question: str
  context: str
  answers: tuple[QAAnswer, ...]   # gold answers (empty: none / unlabelled)
  is_impossible: bool             # v2.0: the context does not answer the question
  where: str                      # "file: data[0].paragraphs[3].qas[1]" or "file:12"
  verified: tuple[QAAnswer, ...] = ()  # the answers whose offsets match the context


@dataclasses.dataclass
class QAFile:
  path: str
  examples: list[QAExample]
  bad_answers: list[tuple[str, str]]  # (question id, what is wrong) per mismatching answer

  def __len__(self):
    return len(self.examples)

  def report(self, limit: int = 5) -> str:
    """One line (plus the first few ids) about answers whose offsets do not match."""
    if not self.bad_answers:
      return ""
    shown = "; ".join(f"{qid}: {why}" for qid, why in self.bad_answers[:limit])
    more = f" (+{len(self.bad_answers) - limit} more)" if len(self.bad_answers) > limit else ""
    return (f"{self.path}: {len(self.bad_answers)} answer(s) do not match their context at "
            f"answer_start and are not trained on: {shown}{more}")


# ----------------------------------------------------------------------------- reading


def read_qa_file(path: str, *, version_2_with_negative: bool = False,
                 labelled: bool = True) -> QAFile:
  """Questions of a SQuAD-format JSON or a JSONL file.

  `labelled=False` (prediction input) does not need answers and ignores them.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: file not found")
  ext = os.path.splitext(path)[1].lower()
  if ext in (".jsonl", ".ndjson"):
    raw = list(_jsonl_questions(path))
  elif ext == ".json":
    raw = list(_squad_questions(path))
  else:
    raise QADataError(f"{path}: unknown file type {ext!r}; QA reads SQuAD-format .json or "
                      ".jsonl files")
  if not raw:
    raise QADataError(f"{path}: no questions")

  seen: dict[str, str] = {}
  examples, bad = [], []
  for qid, question, context, answers, impossible, where in raw:
    if qid in seen:
      raise QADataError(f"{where}: duplicate question id {qid!r} (first at {seen[qid]})")
    seen[qid] = where
    if not labelled:
      examples.append(QAExample(qid, question, context, (), False, where))
      continue
    if impossible is None:
      # No explicit flag: a v2.0 file marks unanswerable questions by no answers.
      impossible = not answers and version_2_with_negative
    if impossible and not version_2_with_negative:
      raise QADataError(
          f"{where}: question {qid!r} is marked is_impossible: this is a SQuAD v2.0 file; "
          "pass --version_2_with_negative (version_2_with_negative=True) to train and "
          "evaluate with unanswerable questions")
    if not impossible and not answers:
      raise QADataError(f"{where}: question {qid!r} has no answers" + (
          "" if version_2_with_negative else
          " (for a v2.0 file with unanswerable questions pass --version_2_with_negative)"))
    if impossible:
      answers = ()  # v2.0's plausible answers are not gold
    verified = []
    for answer in answers:
      problem = _answer_problem(context, answer)
      if problem:
        bad.append((qid, problem))
      else:
        verified.append(answer)
    examples.append(QAExample(qid, question, context, tuple(answers), bool(impossible), where,
                              tuple(verified)))
  return QAFile(path, examples, bad)


def _answer_problem(context: str, answer: QAAnswer) -> str | None:
  if not answer.text:
    return "empty answer text"
  if answer.start is None:
    return f"answer {answer.text!r} has no answer_start"
  end = answer.start + len(answer.text)
  if answer.start < 0 or end > len(context):
    return (f"answer {answer.text!r} at {answer.start} lies outside the context "
            f"({len(context)} characters)")
  found = context[answer.start:end]
  if found != answer.text:
    return f"answer {answer.text!r} at {answer.start}, but the context there reads {found!r}"
  return None


def _load_json(path: str):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise QADataError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None


def _require(value, kind, where: str, what: str):
  if not isinstance(value, kind):
    name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
    raise QADataError(f"{where}: {what} must be a {name}, got {type(value).__name__}")
  return value


def _text(value, where: str, what: str) -> str:
  _require(value, str, where, what)
  if not value.strip():
    raise QADataError(f"{where}: empty {what}")
  return value


def _question_id(qa: dict, where: str) -> str:
  if "id" not in qa or qa["id"] is None or qa["id"] == "":
    raise QADataError(f"{where}: question without an id")
  qid = qa["id"]
  if isinstance(qid, bool) or not isinstance(qid, (str, int)):
    raise QADataError(f"{where}: id must be a string, got {type(qid).__name__}")
  return str(qid)


def _impossible_flag(qa: dict, where: str) -> bool | None:
  if "is_impossible" not in qa:
    return None
  flag = qa["is_impossible"]
  if not isinstance(flag, bool):
    raise QADataError(f"{where}: is_impossible must be true or false, got {flag!r}")
  return flag


def _squad_questions(path: str):
  root = _load_json(path)
  _require(root, dict, path, "the top level")
  if "data" not in root:
    raise QADataError(f"{path}: no 'data' list at the top level (not a SQuAD-format file; "
                      "JSONL files need the .jsonl extension)")
  articles = _require(root["data"], list, path, "'data'")
  for i, article in enumerate(articles):
    where_a = f"{path}: data[{i}]"
    _require(article, dict, where_a, "an article")
    paragraphs = _require(article.get("paragraphs"), list, where_a, "'paragraphs'")
    for j, paragraph in enumerate(paragraphs):
      where_p = f"{where_a}.paragraphs[{j}]"
      _require(paragraph, dict, where_p, "a paragraph")
      context = _text(paragraph.get("context"), where_p, "context")
      qas = _require(paragraph.get("qas"), list, where_p, "'qas'")
      for k, qa in enumerate(qas):
        where = f"{where_p}.qas[{k}]"
        _require(qa, dict, where, "a question")
        qid = _question_id(qa, where)
        question = _text(qa.get("question"), where, "question")
        answers = []
        for n, answer in enumerate(_require(qa.get("answers", []), list, where, "'answers'")):
          where_n = f"{where}.answers[{n}]"
          _require(answer, dict, where_n, "an answer")
          text = _require(answer.get("text"), str, where_n, "text")
          start = answer.get("answer_start")
          if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
            raise QADataError(f"{where_n}: answer_start must be an integer, got {start!r}")
          answers.append(QAAnswer(text, start))
        yield qid, question, context, tuple(answers), _impossible_flag(qa, where), where


def _jsonl_questions(path: str):
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise QADataError(f"{path}:{line_no}:{e.colno}: invalid JSON ({e.msg})") from None
      _require(row, dict, where, "a line")
      qid = _question_id(row, where)
      question = _text(row.get("question"), where, "question")
      context = _text(row.get("context"), where, "context")
      raw = row.get("answers", {"text": [], "answer_start": []})
      _require(raw, dict, where, "'answers' ({\"text\": [...], \"answer_start\": [...]})")
      texts = _require(raw.get("text", []), list, where, "answers.text")
      starts = _require(raw.get("answer_start", [None] * len(texts)), list, where,
                        "answers.answer_start")
      if len(starts) != len(texts):
        raise QADataError(f"{where}: {len(texts)} answer texts but {len(starts)} answer_start "
                          "values")
      answers = []
      for text, start in zip(texts, starts):
        _require(text, str, where, "an answer text")
        if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
          raise QADataError(f"{where}: answer_start must be an integer, got {start!r}")
        answers.append(QAAnswer(text, start))
      yield qid, question, context, tuple(answers), _impossible_flag(row, where), where


def gold_answers(qa_file: QAFile) -> dict[str, list[str]]:
  """id -> gold answer texts (empty for unanswerable questions), for scoring."""
  return {e.id: [a.text for a in e.answers] for e in qa_file.examples}

