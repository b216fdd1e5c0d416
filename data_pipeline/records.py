"""The on-disk form of tokenized documents, and random access to any token of a split.

A shard holds its documents' tokens back to back (sentences of a document are adjacent, so
any run of consecutive sentences is one contiguous range), cut into array_record records of
`page_tokens` tokens: a *page*. Each shard `S.array_record` has a sidecar `S.index.npz` with
per-document sentence counts and per-sentence lengths, which is all the loader needs to plan
examples; it then reads only the pages under the token ranges it uses.

Why pages and not one record per document: an example uses at most `max_seq_length` tokens,
but a document can be a whole book. Reading a document to take a random B from it costs its
length; reading pages costs at most two pages per segment, whatever the document's size.

Coordinates: the tokens of a split (its shards in manifest order) form one stream; a token's
coordinate is its offset in that stream. `TokenReader` maps coordinates to tokens.

Word starts (Chinese whole-word masking, word_segmentation.py): a dataset prepared with a
word segmenter stores each token's "starts a word" flag in the token's top bit (bit 15 of
uint16 tokens, which then hold ids below 2**15, or bit 30 of int32 ones). The flags cost
no extra bytes or reads; they travel through pair assembly with the ids, and the loader
splits them off (`split_word_starts`) before masking.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipeline import fileio

PAGE_TOKENS = 512
# One record per chunk and no compression: token ids barely compress, and a random read
# then costs one seek and one copy.
RECORD_OPTIONS = "group_size:1,uncompressed"
# The loader reads single pages at random: no read-ahead, and no thread pool. Measured with
# array_record 0.8 on 110 shards: seek() + read() one page at a time costs ~7 us of CPU per
# page; read([indices]) costs 17-40 us per page for the handful a batch takes per shard.
READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:1"


def token_dtype_for(vocab_size: int, word_starts: bool = False) -> np.dtype:
  """uint16 when every id (and the word-start bit, if stored) fits, else int32."""
  limit = 1 << 15 if word_starts else np.iinfo(np.uint16).max + 1
  return np.dtype(np.uint16) if vocab_size <= limit else np.dtype(np.int32)


def word_start_bit(token_dtype) -> int:
  """The bit of a stored token that holds its word-start flag."""
  return 15 if np.dtype(token_dtype) == np.uint16 else 30


def split_word_starts(ids: np.ndarray, token_dtype) -> tuple[np.ndarray, np.ndarray]:
  """Stored tokens (any integer array, e.g. assembled int32 rows) -> (ids, bool starts)."""
  bit = word_start_bit(token_dtype)
  ids = np.asarray(ids)
  return ids & ((1 << bit) - 1), (ids >> bit).astype(bool)


class PageWriter:
  """Appends documents' tokens to a shard, one array_record record per full page."""

  def __init__(self, path: str, token_dtype: np.dtype, page_tokens: int = PAGE_TOKENS):
    from array_record.python.array_record_module import ArrayRecordWriter
    self._writer = ArrayRecordWriter(path, RECORD_OPTIONS)
    self._dtype = np.dtype(token_dtype)
    self._page_tokens = page_tokens
    self._pending: list[np.ndarray] = []
    self._pending_tokens = 0
    self.num_tokens = 0

  def write(self, tokens: np.ndarray, word_starts: np.ndarray | None = None) -> None:
    """Appends one document's tokens; `word_starts` (bool per token) go into their top bit."""
    tokens = np.asarray(tokens, dtype=self._dtype)
    if word_starts is not None:
      if len(word_starts) != len(tokens):
        raise ValueError(f"{len(word_starts)} word-start flags for {len(tokens)} tokens")
      bit = word_start_bit(self._dtype)
      if len(tokens) and int(tokens.max()) >> bit:
        raise ValueError(f"token id {int(tokens.max())} does not leave bit {bit} free for "
                         f"word starts")
      tokens = tokens | (np.asarray(word_starts, self._dtype) << self._dtype.type(bit))
    self._pending.append(tokens)
    self._pending_tokens += len(tokens)
    self.num_tokens += len(tokens)
    if self._pending_tokens >= self._page_tokens:
      self._flush(final=False)

  def _flush(self, final: bool) -> None:
    stream = np.concatenate(self._pending) if self._pending else np.zeros(0, self._dtype)
    full = len(stream) if final else len(stream) - len(stream) % self._page_tokens
    for start in range(0, full, self._page_tokens):
      self._writer.write(stream[start:start + self._page_tokens].tobytes())
    rest = stream[full:]
    self._pending = [rest] if len(rest) else []
    self._pending_tokens = len(rest)

  def close(self) -> None:
    self._flush(final=True)
    self._writer.close()


class TokenReader:
  """Tokens of a split at arbitrary coordinates, read page by page from its shards.

  Opened lazily, so that the object pickles cheaply into grain's worker processes.
  """

  def __init__(self, paths: Sequence[str], tokens_per_shard: Sequence[int], token_dtype: str,
               page_tokens: int):
    self.paths = list(paths)
    self.token_dtype = np.dtype(token_dtype)
    self.page_tokens = int(page_tokens)
    tokens = np.asarray(tokens_per_shard, dtype=np.int64)
    self.shard_start = np.concatenate([[0], np.cumsum(tokens)]).astype(np.int64)
    pages = -(-tokens // self.page_tokens)
    self.shard_first_page = np.concatenate([[0], np.cumsum(pages)]).astype(np.int64)
    self._readers = None

  @property
  def num_tokens(self) -> int:
    return int(self.shard_start[-1])

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_readers"] = None
    return state

  def _reader(self, shard: int):
    if self._readers is None:
      self._readers = {}
    reader = self._readers.get(shard)
    if reader is None:
      from array_record.python.array_record_module import ArrayRecordReader
      reader = self._readers[shard] = ArrayRecordReader(self.paths[shard], READER_OPTIONS)
    return reader

  def gather(self, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reads the token ranges [starts[i], starts[i] + lengths[i]) (each within one document).

    Returns (buffer, offsets): buffer[offsets[i] + j] is the token at coordinate
    starts[i] + j. The buffer holds each needed page once, pages in coordinate order, so a
    range crossing a page boundary stays contiguous in it.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    shard = np.searchsorted(self.shard_start, starts, side="right") - 1
    local = starts - self.shard_start[shard]
    first = self.shard_first_page[shard] + local // self.page_tokens
    last = self.shard_first_page[shard] + (local + np.maximum(lengths, 1) - 1) // self.page_tokens
    span = int((last - first).max(initial=0)) + 1
    pages = first[:, None] + np.arange(span)[None, :]
    wanted = np.unique(np.where(pages <= last[:, None], pages, first[:, None]))
    buffer = self._read_pages(wanted).reshape(-1)
    offsets = np.searchsorted(wanted, first) * self.page_tokens + local % self.page_tokens
    return buffer, offsets

  def _read_pages(self, pages: np.ndarray) -> np.ndarray:
    """[len(pages), page_tokens] tokens of the (sorted, unique) global page numbers."""
    size = self.page_tokens * self.token_dtype.itemsize
    shard = np.searchsorted(self.shard_first_page, pages, side="right") - 1
    bounds = np.flatnonzero(np.diff(shard, prepend=-1, append=-1))  # pages are sorted
    chunks = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
      s = int(shard[lo])
      reader = self._reader(s)
      for page in (pages[lo:hi] - self.shard_first_page[s]).tolist():
        reader.seek(page)
        chunks.append(reader.read())
    data = b"".join(chunks)
    if len(data) != size * len(pages):  # A shard's last page is short: pad it.
      data = b"".join(c.ljust(size, b"\0") for c in chunks)
    return np.frombuffer(data, dtype=self.token_dtype).reshape(len(pages), self.page_tokens)


def write_index(path: str, sentence_counts: np.ndarray, sentence_lengths: np.ndarray,
                token_counts: np.ndarray) -> None:
  with fileio.atomic_path(path, suffix=".npz") as tmp:
    np.savez(tmp, sentence_counts=sentence_counts.astype(np.int32),
             sentence_lengths=sentence_lengths.astype(np.int32),
             token_counts=token_counts.astype(np.int64))


def read_index(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as data:
    return {k: data[k] for k in data.files}
