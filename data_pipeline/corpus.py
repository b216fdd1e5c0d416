"""Document sources: local text files (several layouts, gzip, globs) and TFDS datasets.

A document is a list of sentences. Every source streams documents (memory does not grow
with the corpus) and reports what it could not use in a `SkipLog`, which `prepare` writes
into the manifest: nothing is dropped without being counted.

Local layouts (`text_format`):
  "bert"        one sentence per line, a blank line between documents (google-research/bert).
  "lines"       one document per line, split into sentences by `split_sentences`.
  "paragraphs"  one document per blank-line-separated paragraph, split likewise (its
                hard-wrapped lines joined by `text_scripts.join_lines`: no space between
                two CJK characters). A file without a blank line whose lines mostly end a
                sentence (one paragraph per line) is an error naming it; one without a
                blank line otherwise (a single wrapped paragraph) is read, warned about and
                counted.
A document that keeps no text after normalising is counted (`document_without_text`), and a
UTF-8 byte-order mark opening a file is not part of its text.
Sentence splitting, line joining and the optional NFKC normalisation are script-aware
(Latin, Chinese, Japanese; text_scripts.py). Files are UTF-8 unless `encoding` says
otherwise (GB18030, Shift-JIS, ...); a file that does not decode is an error naming its
first bad line, a stray bad line in a file that does decode is counted and skipped.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import os
import re
import warnings
from collections.abc import Iterator, Sequence

from data_pipeline.text import scripts as text_scripts

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


def split_sentences(text: str, rules: text_scripts.TextRules = text_scripts.DEFAULT_RULES
                    ) -> list[str]:
  """Running text -> sentences, for Latin and CJK scripts (rules in text_scripts.py)."""
  return text_scripts.split_sentences(text, rules)


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


# A file whose undecodable lines pass this share of the lines read so far (and at least
# two of them) is in another encoding: an error, rather than a corpus silently thinned.
_BAD_LINE_SHARE = 0.01


def _encoding_error(path: str, encoding: str, first_bad: int, bad: int, read: int) -> CorpusError:
  other = "gb18030" if encoding.replace("-", "").lower() == "utf8" else "utf-8"
  return CorpusError(
      f"{path}:{first_bad}: not valid {encoding} ({bad} of the first {read} lines do not "
      f"decode); if the file is in another encoding (Chinese corpora often come as "
      f"GB18030/GBK, Japanese as Shift-JIS), pass it with --encoding (e.g. "
      f"--encoding={other})")


def _lines(path: str, skips: SkipLog, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
  """(1-based line number, decoded line without newline); a stray bad line is counted."""
  opener = gzip.open if path.endswith(".gz") else open
  bad, first_bad, number = 0, 0, 0
  try:
    with opener(path, "rb") as f:
      for number, raw in enumerate(f, 1):
        try:
          line = raw.decode(encoding).rstrip("\r\n")
          # A byte-order mark opens the file's text; it is not a character of it.
          yield number, (line[1:] if number == 1 and line.startswith("\ufeff") else line)
        except UnicodeDecodeError:
          bad += 1
          first_bad = first_bad or number
          if bad >= 2 and bad > _BAD_LINE_SHARE * number:
            raise _encoding_error(path, encoding, first_bad, bad, number) from None
          skips.add(f"invalid_{_codec_name(encoding)}_line", f"{path}:{number}")
  except (OSError, EOFError) as e:
    raise CorpusError(f"{path}: read failed ({e})") from e
  if bad and bad == number:
    raise _encoding_error(path, encoding, first_bad, bad, number)


def _codec_name(encoding: str) -> str:
  """'utf-8' -> 'utf8' (the skip reason kept from before encodings were selectable)."""
  return encoding.replace("-", "").replace("_", "").lower()


def check_encoding(encoding: str) -> str:
  """The codec's name; a CorpusError naming the parameter when Python has no such codec."""
  import codecs
  try:
    codec = codecs.lookup(encoding)
  except LookupError:
    raise CorpusError(f"encoding={encoding!r} is not a text encoding Python knows (e.g. "
                      f"utf-8, gb18030, gbk, big5, shift_jis, euc-kr)") from None
  if not "a\n".encode(codec.name).endswith(b"a\n"):
    # Lines are found in the raw bytes (so that a bad line can be named and skipped), which
    # needs an encoding where byte 0x0A is always a newline: not UTF-16/32.
    raise CorpusError(f"encoding={encoding!r} is not ASCII-compatible; convert the corpus "
                      f"to UTF-8 (e.g. iconv -f {encoding} -t utf-8)")
  return encoding


def _file_documents(path: str, text_format: str, skips: SkipLog, encoding: str,
                    rules: text_scripts.TextRules) -> Iterator[Document]:
  if os.path.getsize(path) == 0:
    skips.add("empty_file", path)
    return
  if _looks_binary(path):
    skips.add("binary_file", path)
    return
  produced, lines_seen, saw_blank = 0, _LineShape(), False
  block: list[str] = []
  block_start, block_bytes = 0, 0
  for number, line in _lines(path, skips, encoding):
    if not line.strip():
      saw_blank = True
    elif text_format == "lines" or not block:
      block_start, block_bytes = number, 0
    if line.strip():
      lines_seen.add(line)
      block.append(line)
      block_bytes += len(line.encode()) + 1
    # A document ends at its line ("lines"), at a blank line, or at the end of the file.
    if block and (text_format == "lines" or not line.strip()):
      doc = _make_document(block, text_format, rules, f"{path}:{block_start}", block_bytes,
                           skips)
      block = []
      if doc:
        produced += 1
        yield doc
  if block:
    if text_format == "paragraphs" and not saw_blank:
      _check_paragraph_file(path, lines_seen, skips)
    doc = _make_document(block, text_format, rules, f"{path}:{block_start}", block_bytes,
                         skips)
    if doc:
      produced += 1
      yield doc
  if produced == 0:
    skips.add("file_without_text", path)
  elif text_format == "bert" and not saw_blank and produced == 1:
    # Still used, as one document; but a user who meant one-document-per-line should know.
    skips.add("note_bert_format_file_without_blank_lines_read_as_one_document", path)


def _make_document(block: list[str], text_format: str, rules: text_scripts.TextRules,
                   where: str, num_bytes: int, skips: SkipLog) -> Document | None:
  """A block of non-blank lines -> its document; None (counted) when no text is left."""
  if text_format == "bert":
    sentences = [s for s in (text_scripts.normalize(line, rules) for line in block) if s]
  else:
    sentences = text_scripts.split_sentences(text_scripts.join_lines(block), rules)
  if not sentences:
    skips.add("document_without_text", where)
    return None
  return Document(sentences, where, num_bytes)


# Sentence enders (and closers after them) that end a line holding a whole paragraph; a
# hard-wrapped paragraph's lines mostly end mid-sentence.
_LINE_END_RE = re.compile(
    r"[.!?\u3002\uff01\uff1f\u2026][\"')\]\u300d\u300f\u201d\u2019\uff09]*\s*$")


class _LineShape:
  """Counts a file's non-blank lines and those that end a sentence."""

  def __init__(self):
    self.lines, self.sentence_ends = 0, 0

  def add(self, line: str) -> None:
    self.lines += 1
    self.sentence_ends += bool(_LINE_END_RE.search(line))


def _check_paragraph_file(path: str, shape: _LineShape, skips: SkipLog) -> None:
  """A paragraphs-format file without a blank line is one document: an error when its
  lines look like whole paragraphs (most end a sentence), else a counted warning."""
  if shape.lines < 2:
    return
  if shape.sentence_ends * 2 >= shape.lines:
    raise CorpusError(
        f"{path}: --text_format=paragraphs, but the file has no blank line and "
        f"{shape.sentence_ends} of its {shape.lines} lines end a sentence: it looks like one "
        f"paragraph per line, which this format would read as ONE document; use "
        f"--text_format=lines (one document per line), or separate paragraphs by blank lines")
  skips.add("note_paragraphs_format_file_without_blank_lines_read_as_one_document", path)
  warnings.warn(f"{path}: --text_format=paragraphs, but the file has no blank line: its "
                f"{shape.lines} lines are read as one document (if each line is a "
                f"document, use --text_format=lines)", stacklevel=2)


def iter_text_documents(inputs: str | Sequence[str], text_format: str = "bert",
                        skips: SkipLog | None = None, encoding: str = "utf-8",
                        rules: text_scripts.TextRules = text_scripts.DEFAULT_RULES
                        ) -> Iterator[Document]:
  """Streams documents from local text files (globs, gzip) in a stable order.

  `encoding` is the files' text encoding; `num_bytes` of a document counts its UTF-8 bytes.
  """
  if text_format not in TEXT_FORMATS:
    raise CorpusError(f"text_format must be one of {TEXT_FORMATS}, got {text_format!r}")
  check_encoding(encoding)
  skips = skips if skips is not None else SkipLog()
  for path in expand_inputs(inputs):
    yield from _file_documents(path, text_format, skips, encoding, rules)


def parse_tfds_spec(spec: str) -> tuple[str, str]:
  """'wikipedia/20230601.en:text' -> ('wikipedia/20230601.en', 'text')."""
  name, sep, feature = spec.rpartition(":")
  if not sep or not name or not feature:
    raise CorpusError(f"TFDS input must look like 'name[/config][:version]:feature', got {spec!r}")
  return name, feature


def iter_tfds_documents(spec: str, data_dir: str | None, split: str = "train",
                        skips: SkipLog | None = None,
                        rules: text_scripts.TextRules = text_scripts.DEFAULT_RULES
                        ) -> Iterator[Document]:
  """Streams documents from a prepared TFDS dataset ('name[/config][:version]:feature').

  Read through `tfds.data_source` (array_record files), so tensorflow is not needed. Each
  non-empty line of the text feature is split into sentences with `split_sentences` (a
  BERT-format line is one sentence and stays whole; a Wikipedia paragraph is split), with
  the same script-aware rules as local files.
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
    sentences = [s for line in str(value).splitlines() for s in split_sentences(line, rules)]
    if not sentences:
      skips.add("empty_tfds_example", where)
      continue
    yield Document(sentences, where, len(str(value).encode()))
