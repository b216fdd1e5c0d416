"""The on-disk form of a tokenized document, and random access to prepared shards.

One array_record record per document:
  uint32 num_sentences | uint32 sentence_lengths[num_sentences] | tokens (token_dtype)
Tokens of all sentences are stored back to back, so any run of consecutive sentences is
one contiguous slice: pair assembly never concatenates small arrays.
Each shard `S.array_record` has a sidecar `S.index.npz` with per-document sentence counts
and per-sentence lengths, so the loader can plan examples without reading the shards.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

RECORD_OPTIONS = "group_size:1"  # One record per chunk: cheapest random reads.
READER_OPTIONS = "readahead_buffer_size:0"  # The loader reads at random; no read-ahead.


def token_dtype_for(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def encode_document(sentences: Sequence[np.ndarray], token_dtype: np.dtype) -> bytes:
  lengths = np.array([len(s) for s in sentences], dtype=np.uint32)
  header = np.concatenate([np.array([len(sentences)], dtype=np.uint32), lengths])
  tokens = np.concatenate(sentences).astype(token_dtype, copy=False)
  return header.tobytes() + tokens.tobytes()


def decode_document(record: bytes, token_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
  """-> (sentence lengths uint32[n], all tokens as one array)."""
  n = int(np.frombuffer(record, dtype=np.uint32, count=1)[0])
  lengths = np.frombuffer(record, dtype=np.uint32, count=n, offset=4)
  tokens = np.frombuffer(record, dtype=token_dtype, offset=4 * (n + 1))
  return lengths, tokens


class ShardReader:
  """Random access to documents across several array_record shards by global index.

  Opened lazily so that the object pickles cheaply into grain's worker processes.
  """

  def __init__(self, paths: Sequence[str], docs_per_shard: Sequence[int], token_dtype: str):
    self.paths = list(paths)
    self.token_dtype = np.dtype(token_dtype)
    self.starts = np.concatenate([[0], np.cumsum(docs_per_shard)]).astype(np.int64)
    self._readers = None

  def __len__(self) -> int:
    return int(self.starts[-1])

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_readers"] = None
    return state

  def _open(self):
    from array_record.python.array_record_module import ArrayRecordReader
    self._readers = [ArrayRecordReader(p, READER_OPTIONS) for p in self.paths]

  def read(self, doc_ids: np.ndarray) -> list[bytes]:
    """Records for `doc_ids` (any order, repeats allowed), in the order asked."""
    if self._readers is None:
      self._open()
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    shard = np.searchsorted(self.starts, doc_ids, side="right") - 1
    out: list = [None] * len(doc_ids)
    for s in np.unique(shard):
      rows = np.flatnonzero(shard == s)
      local = (doc_ids[rows] - self.starts[s]).tolist()
      for row, record in zip(rows.tolist(), self._readers[s].read(local)):
        out[row] = record
    return out


def write_index(path: str, sentence_counts: np.ndarray, sentence_lengths: np.ndarray,
                token_counts: np.ndarray) -> None:
  tmp = path + ".tmp.npz"
  np.savez(tmp, sentence_counts=sentence_counts.astype(np.int32),
           sentence_lengths=sentence_lengths.astype(np.int32),
           token_counts=token_counts.astype(np.int64))
  os.replace(tmp, path)


def read_index(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as data:
    return {k: data[k] for k in data.files}
