"""The text side of multiple choice (`--task=multiple_choice`): SWAG, CLUE's C3 and CHID.

Each example has N candidates; each candidate is one model sequence
[CLS] first [SEP] second [SEP] (pairs truncated longest-first, as BERT's run_classifier),
and the label is the index of the right one. The layouts, told apart by the file:

  SWAG (.csv)   header `video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0..3,label`
                (test: no label). Candidate i: (sent1, sent2 + " " + ending_i), as
                transformers' run_swag builds them. Id: `fold-ind`.
  C3 (.json)    a JSON list of documents [context sentences, [{question, choice[], answer}],
                document id]. Candidate i: (the context joined, question + " " + choice_i);
                2 to 4 choices (fewer than N: padding candidates that never win). Id: the
                question's `id` when it has one (CLUE's test files), else `<doc id>-<k>`.
  CHID (.json)  JSON lines {candidates[], content (a text or a list of them) with
                #idiom123456# blanks}; the answers in `<name>_answer.json` beside it
                ({"#idiom123456#": index}; absent for the test file). One example per blank,
                id the blank's tag; candidate i: (idiom_i, the passage around the blank with
                idiom_i filled in and the other blanks as "＿").

Arrays: input_ids, token_type_ids, attention_mask [examples, L, N] (the token axis second,
so that the loop's length buckets cut tokens; the model transposes), labels [examples].
Predictions: JSONL, one object per example (id, predicted index, probabilities, label).
Never imports jax.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Sequence

import numpy as np

from data_pipeline.fileio import write_text_atomic
from data_pipeline.finetune import readers as fd
from data_pipeline.finetune.tasks import base

SWAG_COLUMNS = ("video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
                "ending0", "ending1", "ending2", "ending3", "label")
IDIOM = re.compile(r"#idiom\d+#")
BLANK = "＿"  # the other blanks of a CHID passage


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
  id: str
  first: tuple[str, ...]    # per candidate: the first segment
  second: tuple[str, ...]   # per candidate: the second segment
  label: int | None
  line: int                 # line (SWAG, CHID) or document number (C3), 1-based


def read_multiple_choice(path: str, labelled: bool = True) -> list[ChoiceExample]:
  """The examples of a SWAG CSV, a C3 JSON or a CHID JSON-lines file."""
  fmt = os.path.splitext(path)[1].lower()
  if fmt == ".csv":
    examples = _read_swag(path, labelled)
  elif fmt in (".json", ".jsonl"):
    with fd.open_text(path) as f:
      text = f.read()
    try:
      whole = json.loads(text)
    except json.JSONDecodeError:
      whole = None
    examples = _read_c3(path, whole, labelled) if isinstance(whole, list) else \
        _read_chid(path, text, labelled)
  else:
    raise fd.DataError(f"{path}: task=multiple_choice reads SWAG (.csv), C3 or CHID (.json)")
  if not examples:
    raise fd.DataError(f"{path}:1: no examples (empty file)")
  return examples


def _read_swag(path: str, labelled: bool) -> list[ChoiceExample]:
  needed = [c for c in SWAG_COLUMNS if c != "label" or labelled]
  examples = []
  for line, row, columns in fd.read_delimited(path, "csv"):
    missing = [c for c in needed if c not in columns]
    if missing:
      raise fd.DataError(f"{path}:1: not SWAG's layout: no column(s) {missing}; expected "
                         f"{', '.join(SWAG_COLUMNS)} (label only when labelled)")
    endings = [row[f"ending{i}"] for i in range(4)]
    label = _index(row.get("label"), 4, path, line) if labelled or row.get("label") else None
    examples.append(ChoiceExample(row["fold-ind"], (row["sent1"],) * 4,
                                  tuple(f"{row['sent2']} {e}" for e in endings), label, line))
  return examples


def _index(raw, n: int, path: str, line: int) -> int:
  try:
    value = int(raw)
  except (TypeError, ValueError):
    raise fd.DataError(f"{path}:{line}: label {raw!r} is not a candidate index") from None
  if not 0 <= value < n:
    raise fd.DataError(f"{path}:{line}: label {value} is not one of the {n} candidates")
  return value


def _read_c3(path: str, documents: list, labelled: bool) -> list[ChoiceExample]:
  layout = "C3's layout: a list of [context sentences, [{question, choice, answer}], id]"
  examples = []
  for d, doc in enumerate(documents, 1):
    if not (isinstance(doc, list) and len(doc) >= 2 and isinstance(doc[1], list)):
      raise fd.DataError(f"{path}: document {d}: not {layout}")
    context = doc[0] if isinstance(doc[0], str) else "\n".join(doc[0])
    doc_id = doc[2] if len(doc) > 2 else str(d)
    for k, q in enumerate(doc[1]):
      if not isinstance(q, dict) or "question" not in q or "choice" not in q:
        raise fd.DataError(f"{path}: document {d} ({doc_id}), question {k + 1}: no "
                           f"'question' / 'choice'; expected {layout}")
      choices = [str(c) for c in q["choice"]]
      label = None
      if labelled or "answer" in q:
        if q.get("answer") not in choices:
          raise fd.DataError(f"{path}: document {d} ({doc_id}), question {k + 1}: answer "
                             f"{q.get('answer')!r} is not one of its choices {choices}")
        label = choices.index(q["answer"])
      examples.append(ChoiceExample(str(q.get("id", f"{doc_id}-{k}")), (context,) * len(choices),
                                    tuple(f"{q['question']} {c}" for c in choices), label, d))
  return examples


def chid_answer_path(path: str) -> str:
  stem, ext = os.path.splitext(path)
  return f"{stem}_answer{ext}"


def _read_chid(path: str, text: str, labelled: bool) -> list[ChoiceExample]:
  answers = None
  if os.path.exists(chid_answer_path(path)):
    with fd.open_text(chid_answer_path(path)) as f:
      answers = json.load(f)
  elif labelled:
    raise fd.DataError(f"{path}: CHID's answers are read from {chid_answer_path(path)}, "
                       "which does not exist")
  examples = []
  for line_no, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise fd.DataError(f"{path}:{line_no}: invalid JSON ({e.msg}); expected C3's JSON list "
                         "or CHID's JSON lines") from None
    if not isinstance(row, dict) or "candidates" not in row or "content" not in row:
      raise fd.DataError(f"{path}:{line_no}: not CHID's layout: expected keys 'candidates' and "
                         "'content' (or C3's JSON list)")
    contents = [row["content"]] if isinstance(row["content"], str) else row["content"]
    for content in contents:
      for blank in IDIOM.finditer(content):
        examples.append(_chid_example(path, line_no, row["candidates"], content, blank, answers))
  return examples


def _chid_example(path, line_no, candidates, content, blank, answers) -> ChoiceExample:
  tag = blank.group()
  label = None
  if answers is not None:
    if tag not in answers:
      raise fd.DataError(f"{path}:{line_no}: blank {tag} has no answer in "
                         f"{chid_answer_path(path)}")
    label = _index(answers[tag], len(candidates), path, line_no)
  left = IDIOM.sub(BLANK, content[:blank.start()])
  right = IDIOM.sub(BLANK, content[blank.end():])
  # The passage is cut around the blank at encoding time (`first` keeps the sides apart).
  return ChoiceExample(tag, tuple(candidates), tuple(f"{left}\0{c}\0{right}" for c in candidates),
                       label, line_no)


def _around_blank(second: str, max_chars: int) -> str:
  """A CHID passage (left \\0 idiom \\0 right) cut to about `max_chars` around the idiom."""
  if "\0" not in second:
    return second
  left, idiom, right = second.split("\0")
  side = max(max_chars - len(idiom), 0) // 2
  return left[len(left) - side:] + idiom + right[:side]


def encode_multiple_choice(examples: Sequence[ChoiceExample], tokenizer, max_seq_length: int
                           ) -> dict[str, np.ndarray]:
  """[examples, L, N] input arrays (+ labels [examples] when every example has one)."""
  if max_seq_length < 4:
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for text")
  n = max(len(e.first) for e in examples)
  firsts = [f for e in examples for f in e.first]
  seconds = [_around_blank(s, max_seq_length) for e in examples for s in e.second]
  rows_a, rows_b = tokenizer.encode_batch(firsts), tokenizer.encode_batch(seconds)
  for a, b in zip(rows_a, rows_b):
    fd.truncate_pair(a, b, max_seq_length - 3)
  packed = fd.pack_pairs(rows_a, rows_b, tokenizer.special_ids, max_seq_length)
  out = {k: np.zeros((len(examples), n, max_seq_length), np.int32) for k in packed}
  out["input_ids"][:] = tokenizer.special_ids["pad_id"]
  k = 0
  for i, e in enumerate(examples):  # fewer candidates than n: the rest stay padding
    for key, value in packed.items():
      out[key][i, :len(e.first)] = value[k:k + len(e.first)]
    k += len(e.first)
  out = {key: np.ascontiguousarray(np.swapaxes(v, 1, 2)) for key, v in out.items()}
  if all(e.label is not None for e in examples):
    out["labels"] = np.array([e.label for e in examples], np.int32)
  return out


class MultipleChoiceText(base.TextTask):
  """The fine-tuning loop's text side for `--task=multiple_choice`."""
  name = "multiple_choice"

  def read(self, path: str, labelled: bool):
    return read_multiple_choice(path, labelled)

  def label_list(self, train_items, given):
    return []  # candidate indices, not labels

  def encode(self, path, items, tokenizer, label_list, max_seq_length):
    return base.EncodedFile(path, list(items),
                            encode_multiple_choice(items, tokenizer, max_seq_length))

  def references(self, encoded):
    return encoded.arrays["labels"]

  def decode(self, encoded, outputs, label_list):
    return outputs  # [examples, N] probabilities

  def write_predictions(self, stem, encoded, predictions, label_list) -> str:
    path = stem + ".jsonl"
    lines = []
    for ex, probs in zip(encoded.items, predictions):
      row = {"id": ex.id, "line": ex.line, "prediction": int(np.argmax(probs[:len(ex.first)])),
             "probabilities": [round(float(p), 6) for p in probs[:len(ex.first)]]}
      if ex.label is not None:
        row["label"] = ex.label
      lines.append(json.dumps(row, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path

  def meta(self) -> dict:
    return {}
