"""Fine-tuning data: read labelled files, tokenize into the fine-tuning batch contract.

Readers
  * CSV / TSV (a header row names the columns) and JSONL (one object per line) for
    sequence classification and regression: a text column, an optional text-pair
    column, a label column.
  * CoNLL for token classification: one token per line with its tag in the last
    whitespace-separated field (so CoNLL-2003's `token POS chunk NER` works), a blank
    line between sentences, `-DOCSTART-` lines skipped; or JSONL with a list of
    tokens and a list of tags per line.

Every problem with a file (missing column, unknown label, empty file, a token
without a tag) is a `DataError` whose message starts with `path:line:`.

Encoded arrays (NumPy, one row per example; the fine-tuning batch contract):
  input_ids, token_type_ids, attention_mask  [N, L] int32  ([CLS] A [SEP] B [SEP] [PAD]...)
  labels  [N] int32 (classification), [N] float32 (regression), or
          [N, L] int32 (token classification): the tag id on each word's first
          sub-token, IGNORE_INDEX (-100) on the other sub-tokens, the specials and padding.
Unlabelled input (prediction) has no `labels`.

Never imports jax.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

# transformers' and PyTorch's CrossEntropyLoss ignore index: the same files and
# conventions work on both sides.
IGNORE_INDEX = -100
TASKS = ("classification", "regression", "ner")


class DataError(ValueError):
  """A fine-tuning file is malformed; the message names the file and the line."""


@dataclasses.dataclass(frozen=True)
class TextExample:
  text: str
  text_pair: str | None
  label: str | float | None  # the raw label string (classification) or value (regression)
  line: int                  # 1-based line of the example in its file


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
  tokens: tuple[str, ...]
  tags: tuple[str, ...] | None
  line: int                  # line of the sentence's first token


def file_format(path: str) -> str:
  """'csv', 'tsv', 'jsonl' or 'conll', from the file name."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".csv":
    return "csv"
  if ext == ".tsv":
    return "tsv"
  if ext in (".jsonl", ".json", ".ndjson"):
    return "jsonl"
  if ext in (".conll", ".txt", ".bio", ".iob", ".conllu"):
    return "conll"
  raise DataError(f"{path}: unknown file type {ext!r}; expected .csv, .tsv, .jsonl "
                  "(classification/regression/NER) or .conll/.txt/.bio (NER)")


def _check_utf8(path: str) -> None:
  """A file in another encoding (GBK, Shift-JIS) fails here, naming its first bad line,
  rather than deep inside the CSV reader without one."""
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, 1):
      try:
        raw.decode("utf-8")
      except UnicodeDecodeError:
        raise DataError(f"{path}:{line_no}: not valid UTF-8; fine-tuning files must be UTF-8 "
                        "(convert e.g. a GB18030 file with iconv -f gb18030 -t utf-8)") from None


def open_text(path: str):
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found")
  _check_utf8(path)
  return open(path, encoding="utf-8", newline="")


def _label_value(raw, task: str, path: str, line: int):
  if raw is None or (isinstance(raw, str) and not raw.strip()):
    raise DataError(f"{path}:{line}: empty label")
  if task == "regression":
    try:
      value = float(raw)
    except (TypeError, ValueError):
      raise DataError(f"{path}:{line}: label {raw!r} is not a number (task=regression)") from None
    if not np.isfinite(value):
      raise DataError(f"{path}:{line}: label {raw!r} is not finite")
    return value
  if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
    raise DataError(f"{path}:{line}: label {raw!r} is not a string or a number")
  if isinstance(raw, float) and raw.is_integer():
    raw = int(raw)
  return str(raw).strip()


def _text_value(raw, column: str, path: str, line: int, *, required: bool) -> str | None:
  if raw is None:
    if required:
      raise DataError(f"{path}:{line}: no value in column {column!r}")
    return None
  if not isinstance(raw, str):
    raise DataError(f"{path}:{line}: column {column!r} holds {type(raw).__name__}, not text")
  return raw


def read_text_examples(path: str, *, task: str, text_column: str = "sentence",
                       text_pair_column: str | None = None, label_column: str = "label",
                       labelled: bool = True) -> list[TextExample]:
  """Examples of a CSV / TSV / JSONL file for classification or regression.

  `labelled=False` (prediction input) reads the label column only if present.
  """
  if task not in ("classification", "regression"):
    raise ValueError(f"task={task!r}: text files are for 'classification' or 'regression'")
  fmt = file_format(path)
  if fmt == "conll":
    raise DataError(f"{path}: a CoNLL file holds tokens and tags; task={task} needs CSV, TSV "
                    "or JSONL")
  rows = _read_jsonl(path) if fmt == "jsonl" else read_delimited(path, fmt)
  examples = []
  for line, row, columns in rows:
    for column in [text_column] + ([text_pair_column] if text_pair_column else []) + (
        [label_column] if labelled else []):
      if column not in columns:
        raise DataError(f"{path}:{line}: no column {column!r}; the columns are {sorted(columns)}")
    text = _text_value(row.get(text_column), text_column, path, line, required=True)
    pair = (_text_value(row.get(text_pair_column), text_pair_column, path, line, required=True)
            if text_pair_column else None)
    label = None
    if label_column in row and (labelled or row[label_column] not in (None, "")):
      label = _label_value(row[label_column], task, path, line)
    examples.append(TextExample(text, pair, label, line))
  if not examples:
    raise DataError(f"{path}:1: no examples (empty file)")
  return examples


def read_delimited(path: str, fmt: str) -> Iterable[tuple[int, dict, set]]:
  with open_text(path) as f:
    # GLUE's TSVs contain unbalanced quotes inside sentences: no quoting for TSV.
    reader = (csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv"
              else csv.reader(f))
    try:
      header = next(reader)
    except StopIteration:
      raise DataError(f"{path}:1: empty file (expected a header row naming the columns)") from None
    except csv.Error as e:
      raise DataError(f"{path}:{reader.line_num}: {e}") from None
    header = [h.strip() for h in header]
    columns = set(header)
    while True:
      try:
        values = next(reader)
      except StopIteration:
        return
      except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: {e}") from None
      if not values or all(not v.strip() for v in values):
        continue
      if len(values) != len(header):
        raise DataError(f"{path}:{reader.line_num}: {len(values)} fields, but the header has "
                        f"{len(header)} ({', '.join(header)})")
      yield reader.line_num, dict(zip(header, values)), columns


def _read_jsonl(path: str) -> Iterable[tuple[int, dict, set]]:
  with open_text(path) as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{line_no}: invalid JSON ({e.msg})") from None
      if not isinstance(row, dict):
        raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
      yield line_no, row, set(row)


def read_tagged_sentences(path: str, *, labelled: bool = True, tokens_key: str = "tokens",
                          tags_key: str = "tags") -> list[TaggedSentence]:
  """Sentences of a CoNLL file (or JSONL with `tokens_key` / `tags_key` lists).

  In a CoNLL file the token is the first field, the tag the last; with
  `labelled=False` a line may hold the token alone (tags then are None).
  """
  fmt = file_format(path)
  if fmt in ("csv", "tsv"):
    raise DataError(f"{path}: task=ner reads CoNLL (.conll/.txt/.bio) or JSONL files")
  sentences = _read_jsonl_tagged(path, labelled, tokens_key, tags_key) if fmt == "jsonl" \
      else _read_conll(path, labelled)
  if not sentences:
    raise DataError(f"{path}:1: no sentences (empty file)")
  return sentences


def _read_conll(path: str, labelled: bool) -> list[TaggedSentence]:
  sentences = []
  tokens, tags, start = [], [], 0
  has_tags = None  # whether the file's lines carry a tag; must not change midway

  def flush():
    if tokens:
      sentences.append(TaggedSentence(tuple(tokens), tuple(tags) if has_tags else None, start))
    tokens.clear()
    tags.clear()

  with open_text(path) as f:
    for line_no, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        flush()
        continue
      if fields[0] == "-DOCSTART-":
        flush()
        continue
      tagged = len(fields) >= 2
      if labelled and not tagged:
        raise DataError(f"{path}:{line_no}: token {fields[0]!r} has no tag (expected "
                        "'TOKEN TAG', whitespace-separated)")
      if has_tags is None:
        has_tags = tagged
      elif tagged != has_tags:
        raise DataError(f"{path}:{line_no}: {'a tag' if tagged else 'no tag'} here, but the "
                        f"lines before {'had none' if tagged else 'had tags'}; tokens and tags "
                        "must come together on every line")
      if not tokens:
        start = line_no
      tokens.append(fields[0])
      if tagged:
        tags.append(fields[-1])
  flush()
  return sentences


def _read_jsonl_tagged(path, labelled, tokens_key, tags_key) -> list[TaggedSentence]:
  sentences = []
  for line, row, columns in _read_jsonl(path):
    if tokens_key not in columns:
      raise DataError(f"{path}:{line}: no key {tokens_key!r}; the keys are {sorted(columns)}")
    toks = row[tokens_key]
    if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks) or not toks:
      raise DataError(f"{path}:{line}: {tokens_key!r} must be a non-empty list of strings")
    tags = row.get(tags_key)
    if labelled and tags is None:
      raise DataError(f"{path}:{line}: no key {tags_key!r}; the keys are {sorted(columns)}")
    if tags is not None:
      if not isinstance(tags, list) or not all(isinstance(t, (str, int)) for t in tags):
        raise DataError(f"{path}:{line}: {tags_key!r} must be a list of tags")
      if len(tags) != len(toks):
        raise DataError(f"{path}:{line}: {len(toks)} tokens but {len(tags)} tags")
      tags = tuple(str(t) for t in tags)
    sentences.append(TaggedSentence(tuple(toks), tags, line))
  return sentences


# ----------------------------------------------------------------------------- labels


def _sort_key(label: str):
  # Numeric labels ("0", "1", "2") in numeric order, so that "1" is the positive
  # class of a 0/1 task and "10" sorts after "9".
  try:
    return (0, float(label), label)
  except ValueError:
    return (1, 0.0, label)


def infer_label_list(labels: Iterable[str], *, ner: bool = False) -> list[str]:
  """The sorted label set of a training file; NER puts 'O' first."""
  labels = set(labels)
  if ner:
    labels.add("O")
    return ["O"] + sorted(labels - {"O"}, key=lambda t: (_split_type(t), t))
  return sorted(labels, key=_sort_key)


def _split_type(tag: str) -> str:
  return tag[2:] if len(tag) > 2 and tag[1] == "-" else tag


def check_labels(path: str, items, label_list: Sequence[str]) -> None:
  """Every label of `items` (TextExample / TaggedSentence) must be in `label_list`."""
  known = set(label_list)
  for item in items:
    if isinstance(item, TaggedSentence):
      for offset, tag in enumerate(item.tags or ()):
        if tag not in known:
          raise DataError(f"{path}:{item.line + offset}: tag {tag!r} is not in the label set "
                          f"{list(label_list)} (from the training file)")
    elif item.label is not None and item.label not in known:
      raise DataError(f"{path}:{item.line}: label {item.label!r} is not in the label set "
                      f"{list(label_list)} (from the training file)")


# ----------------------------------------------------------------------------- encoding


def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> None:
  """Trims the longer of the two, one token at a time (BERT's run_classifier)."""
  while len(a) + len(b) > max_tokens:
    (a if len(a) > len(b) else b).pop()


def pack_pairs(rows_a, rows_b, special_ids, max_seq_length):
  n = len(rows_a)
  input_ids = np.full((n, max_seq_length), special_ids["pad_id"], np.int32)
  token_type_ids = np.zeros((n, max_seq_length), np.int32)
  attention_mask = np.zeros((n, max_seq_length), np.int32)
  cls, sep = special_ids["cls_id"], special_ids["sep_id"]
  for i, (a, b) in enumerate(zip(rows_a, rows_b)):
    ids = [cls] + a + [sep]
    types = [0] * len(ids)
    if b is not None:
      ids += b + [sep]
      types += [1] * (len(b) + 1)
    input_ids[i, :len(ids)] = ids
    token_type_ids[i, :len(ids)] = types
    attention_mask[i, :len(ids)] = 1
  return dict(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)


def encode_text_examples(examples: Sequence[TextExample], tokenizer, max_seq_length: int, *,
                         task: str, label_list: Sequence[str] | None = None
                         ) -> dict[str, np.ndarray]:
  """Batch-contract arrays for classification / regression examples.

  `labels` is included when every example has one: class ids into `label_list`
  (int32) for classification, the values (float32) for regression. Pairs are
  truncated longest-first to fit [CLS] A [SEP] B [SEP] in `max_seq_length`.
  """
  if max_seq_length < 3 + any(e.text_pair is not None for e in examples):
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for text")
  rows_a = tokenizer.encode_batch([e.text for e in examples])
  has_pair = [e.text_pair is not None for e in examples]
  pairs = tokenizer.encode_batch([e.text_pair for e in examples if e.text_pair is not None])
  pair_iter = iter(pairs)
  rows_b = [next(pair_iter) if p else None for p in has_pair]
  for a, b in zip(rows_a, rows_b):
    if b is None:
      del a[max_seq_length - 2:]
    else:
      truncate_pair(a, b, max_seq_length - 3)
  out = pack_pairs(rows_a, rows_b, tokenizer.special_ids, max_seq_length)
  if examples and all(e.label is not None for e in examples):
    if task == "regression":
      out["labels"] = np.array([e.label for e in examples], np.float32)
    else:
      index = {label: i for i, label in enumerate(label_list)}
      out["labels"] = np.array([index[e.label] for e in examples], np.int32)
  return out


@dataclasses.dataclass
class EncodedTagged:
  """Token-classification arrays plus where each word's prediction is read from."""
  arrays: dict[str, np.ndarray]
  word_positions: list[np.ndarray]  # per sentence: [kept words] position of each word's first sub-token
  num_truncated_words: int          # words that did not fit in max_seq_length (predicted 'O')


def encode_tagged_sentences(sentences: Sequence[TaggedSentence], tokenizer, max_seq_length: int,
                            *, label_list: Sequence[str] | None = None) -> EncodedTagged:
  """[CLS] word sub-tokens... [SEP]; each word's tag on its first sub-token.

  Words are tokenized one at a time, so a tag always lands on the start of its
  own word; a word the tokenizer turns into nothing (e.g. a control character)
  becomes [UNK], so that it still carries its tag. Words past the length limit
  are dropped (counted in `num_truncated_words`).
  """
  words = [w for s in sentences for w in s.tokens]
  pieces = tokenizer.encode_batch(words) if words else []
  unk = tokenizer.special_ids["unk_id"]
  index = {t: i for i, t in enumerate(label_list)} if label_list is not None else None
  labelled = index is not None and all(s.tags is not None for s in sentences)
  n = len(sentences)
  labels = np.full((n, max_seq_length), IGNORE_INDEX, np.int32)
  rows, positions, truncated = [], [], 0
  k = 0
  for i, sentence in enumerate(sentences):
    ids, pos = [], []
    for j in range(len(sentence.tokens)):
      piece = pieces[k + j] or [unk]
      if 1 + len(ids) + len(piece) + 1 > max_seq_length:
        truncated += len(sentence.tokens) - j
        break
      pos.append(1 + len(ids))
      if labelled:
        labels[i, 1 + len(ids)] = index[sentence.tags[j]]
      ids.extend(piece)
    k += len(sentence.tokens)
    rows.append(ids)
    positions.append(np.asarray(pos, np.int32))
  arrays = pack_pairs(rows, [None] * n, tokenizer.special_ids, max_seq_length)
  if labelled:
    arrays["labels"] = labels
  return EncodedTagged(arrays, positions, truncated)
