"""Document sources: local text files (several layouts, gzip, globs) and TFDS datasets.

A document is a list of sentences. Every source streams documents (memory does not grow
with the corpus) and reports what it could not use in a `SkipLog`, which `prepare` writes
into the manifest: nothing is dropped without being counted.

Local layouts (`text_format`):
  "bert"        one sentence per line, a blank line between documents (google-research/bert).
  "lines"       one document per line, split into sentences by `split_sentences`.
  "paragraphs"  one document per blank-line-separated paragraph, split likewise.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import os
import re
from collections.abc import Iterator, Sequence

TEXT_FORMATS = ("bert", "lines", "paragraphs")
_BINARY_SNIFF_BYTES = 8192
_MAX_EXAMPLES_PER_REASON = 5


class CorpusError(ValueError):
  """The corpus cannot be read at all (missing path, unknown dataset or feature)."""


@dataclasses.dataclass
class Document:
  sentences: list[str]
  source: str       # "file:line" of the document's first line, or "tfds:name/split[i]".
  num_bytes: int    # UTF-8 bytes of the raw text, for throughput reporting.


class SkipLog:
  """Counts of skipped or adjusted inputs by reason, with the first few locations."""

  def __init__(self):
    self.counts = collections.Counter()
    self.examples = collections.defaultdict(list)

  def add(self, reason: str, where: str, n: int = 1) -> None:
    self.counts[reason] += n
    if len(self.examples[reason]) < _MAX_EXAMPLES_PER_REASON:
      self.examples[reason].append(where)

  def merge(self, other: "SkipLog") -> None:
    for reason, n in other.counts.items():
      self.counts[reason] += n
      room = _MAX_EXAMPLES_PER_REASON - len(self.examples[reason])
      self.examples[reason].extend(other.examples[reason][:max(room, 0)])

  def to_json(self) -> dict:
    return {r: {"count": n, "examples": self.examples[r]} for r, n in sorted(self.counts.items())}

  @classmethod
  def from_json(cls, data: dict) -> "SkipLog":
    log = cls()
    for reason, entry in data.items():
      log.counts[reason] = entry["count"]
      log.examples[reason] = list(entry["examples"])
    return log


# A sentence ends at . ! or ? (optionally followed by closing quotes or brackets) when
# whitespace and then an uppercase letter, digit or opening quote follow. Simple and
# predictable; abbreviations such as "Dr. Smith" are split wrongly, which costs little
# for pretraining (BERT only needs roughly sentence-sized units).
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
  """Splits running text into sentences with the rule above; drops empty pieces."""
  text = " ".join(text.split())
  return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def expand_inputs(inputs: str | Sequence[str]) -> list[str]:
  """Comma-separated globs (or a list of them) -> sorted, de-duplicated file list.

  Raises CorpusError naming every pattern that matches nothing.
  """
  patterns = [p for p in (inputs.split(",") if isinstance(inputs, str) else inputs) if p]
  if not patterns:
    raise CorpusError("no input given")
  files, missing = [], []
  for pattern in patterns:
    matched = sorted(f for f in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(f))
    if not matched:
      missing.append(pattern)
    files.extend(matched)
  if missing:
    raise CorpusError(f"no files match: {', '.join(missing)}")
  return list(dict.fromkeys(files))


def _looks_binary(path: str) -> bool:
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      head = f.read(_BINARY_SNIFF_BYTES)
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
    raise CorpusError(f"{path}: cannot read ({e})") from e
  return b"\x00" in head


def _lines(path: str, skips: SkipLog) -> Iterator[tuple[int, str]]:
  """(1-based line number, decoded line without newline); bad UTF-8 lines are counted."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      for number, raw in enumerate(f, 1):
        try:
          yield number, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
          skips.add("invalid_utf8_line", f"{path}:{number}")
  except (OSError, EOFError) as e:
    raise CorpusError(f"{path}: read failed ({e})") from e


def _file_documents(path: str, text_format: str, skips: SkipLog) -> Iterator[Document]:
  if os.path.getsize(path) == 0:
    skips.add("empty_file", path)
    return
  if _looks_binary(path):
    skips.add("binary_file", path)
    return
  produced = 0
  saw_blank = False
  block: list[str] = []
  block_start, block_bytes = 0, 0

  def flush():
    if text_format == "bert":
      sentences = [" ".join(line.split()) for line in block]
    else:
      sentences = split_sentences(" ".join(block))
    return Document(sentences, f"{path}:{block_start}", block_bytes) if sentences else None

  for number, line in _lines(path, skips):
    if text_format == "lines":
      if line.strip():
        block, block_start, block_bytes = [line], number, len(line.encode()) + 1
        doc = flush()
        if doc:
          produced += 1
          yield doc
      continue
    if line.strip():
      if not block:
        block_start, block_bytes = number, 0
      block.append(line)
      block_bytes += len(line.encode()) + 1
    else:
      saw_blank = True
      if block:
        doc = flush()
        if doc:
          produced += 1
          yield doc
        block = []
  if block:
    doc = flush()
    if doc:
      produced += 1
      yield doc
  if produced == 0:
    skips.add("file_without_text", path)
  elif text_format == "bert" and not saw_blank and produced == 1:
    # Still used, as one document; but a user who meant one-document-per-line should know.
    skips.add("note_bert_format_file_without_blank_lines_read_as_one_document", path)


def iter_text_documents(inputs: str | Sequence[str], text_format: str = "bert",
                        skips: SkipLog | None = None) -> Iterator[Document]:
  """Streams documents from local text files (globs, gzip) in a stable order."""
  if text_format not in TEXT_FORMATS:
    raise CorpusError(f"text_format must be one of {TEXT_FORMATS}, got {text_format!r}")
  skips = skips if skips is not None else SkipLog()
  for path in expand_inputs(inputs):
    yield from _file_documents(path, text_format, skips)


def parse_tfds_spec(spec: str) -> tuple[str, str]:
  """'wikipedia/20230601.en:text' -> ('wikipedia/20230601.en', 'text')."""
  name, sep, feature = spec.rpartition(":")
  if not sep or not name or not feature:
    raise CorpusError(f"TFDS input must look like 'name[/config][:version]:feature', got {spec!r}")
  return name, feature


def iter_tfds_documents(spec: str, data_dir: str | None, split: str = "train",
                        skips: SkipLog | None = None) -> Iterator[Document]:
  """Streams documents from a prepared TFDS dataset ('name[/config][:version]:feature').

  Read through `tfds.data_source` (array_record files), so tensorflow is not needed. Each
  non-empty line of the text feature is split into sentences with `split_sentences` (a
  BERT-format line is one sentence and stays whole; a Wikipedia paragraph is split).
  """
  skips = skips if skips is not None else SkipLog()
  name, feature = parse_tfds_spec(spec)
  import tensorflow_datasets as tfds
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises many types (DatasetNotFoundError, AssertionError...).
    raise CorpusError(f"TFDS dataset {name!r} split {split!r} is not available in "
                      f"--tfds_data_dir={data_dir!r} as array_record (prepare it there with "
                      f"tfds and file_format=array_record): {e}") from e
  for i in range(len(source)):
    where = f"tfds:{name}/{split}[{i}]"
    example = source[i]
    if feature not in example:
      raise CorpusError(f"TFDS dataset {name!r} has no feature {feature!r}; it has "
                        f"{sorted(example)}")
    value = example[feature]
    if isinstance(value, bytes):
      try:
        value = value.decode("utf-8")
      except UnicodeDecodeError:
        skips.add("invalid_utf8_tfds_example", where)
        continue
    sentences = [s for line in str(value).splitlines() for s in split_sentences(line)]
    if not sentences:
      skips.add("empty_tfds_example", where)
      continue
    yield Document(sentences, where, len(str(value).encode()))
