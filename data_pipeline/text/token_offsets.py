"""Token ids with the character span of each token in the original text.

Extractive QA cuts its answer out of the context by characters, so every
context token must map back to where it came from, whatever the tokenizer did
on the way (lower-casing, accent stripping, splitting CJK characters, merging a
space into a SentencePiece piece). Both kinds of tokenizer are covered:

  * WordPiece (`tokenizers`' BERT pipeline): the library tracks offsets through
    its normaliser; they are character offsets into the input string.
  * SentencePiece: pieces carry byte offsets into the UTF-8 input; they are
    turned into character offsets here. A piece's span is trimmed of the
    whitespace SentencePiece folds into it ("▁Paris" covers " Paris"; its span
    is "Paris"), and a piece that is only whitespace gets the empty span at the
    next character.

The ids are exactly `tokenizer.encode(text)`'s (checked on every call: the
offset engine is built from the same file with the same options, and a
disagreement is an error rather than a silently shifted answer).
"""
from __future__ import annotations

import numpy as np

_ENGINES: dict[str, object] = {}


def _wordpiece_engine(tokenizer):
  from tokenizers import BertWordPieceTokenizer
  # The options of data_pipeline.text.tokenizer.WordPieceTokenizer.
  return BertWordPieceTokenizer(tokenizer.path, lowercase=tokenizer.lowercase, clean_text=True,
                                handle_chinese_chars=True, strip_accents=None)


def _sentencepiece_engine(tokenizer):
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor()
  sp.Load(tokenizer.path)
  return sp


def _engine(tokenizer):
  key = tokenizer.identity
  if key not in _ENGINES:
    if tokenizer.kind == "wordpiece":
      _ENGINES[key] = _wordpiece_engine(tokenizer)
    elif tokenizer.kind == "sentencepiece":
      _ENGINES[key] = _sentencepiece_engine(tokenizer)
    else:
      raise ValueError(f"no character offsets for a tokenizer of kind {tokenizer.kind!r}")
  return _ENGINES[key]


def _char_index_of_bytes(text: str) -> np.ndarray:
  """[n_bytes + 1] int: the character each UTF-8 byte of `text` belongs to."""
  lengths = [len(ch.encode("utf-8")) for ch in text]
  return np.repeat(np.arange(len(text) + 1), lengths + [1])


def _trim(text: str, begin: int, end: int) -> tuple[int, int]:
  while begin < end and text[begin].isspace():
    begin += 1
  while end > begin and text[end - 1].isspace():
    end -= 1
  if begin == end:  # only whitespace: an empty span where the next character starts
    return end, end
  return begin, end


def _sentencepiece_offsets(sp, text: str) -> tuple[list[int], list[tuple[int, int]]]:
  proto = sp.Encode(text, return_type="proto")
  chars = _char_index_of_bytes(text)
  ids, spans = [], []
  for piece in proto.pieces:
    ids.append(piece.id)
    begin, end = int(chars[piece.begin]), int(chars[piece.end])
    spans.append(_trim(text, begin, end))
  return ids, spans


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], np.ndarray]:
  """(ids, offsets [T, 2] int32): `tokenizer.encode(text)` and each token's
  [start, end) character span in `text` (end > start except for whitespace-only
  SentencePiece pieces)."""
  engine = _engine(tokenizer)
  if tokenizer.kind == "wordpiece":
    encoding = engine.encode(text, add_special_tokens=False)
    ids, spans = list(encoding.ids), list(encoding.offsets)
  else:
    ids, spans = _sentencepiece_offsets(engine, text)
  expected = tokenizer.encode(text)
  if list(expected) != ids:
    raise ValueError(
        f"{tokenizer.path}: the offset tokenizer disagrees with the tokenizer on {text[:60]!r} "
        f"({len(ids)} vs {len(expected)} ids); character offsets would be wrong")
  offsets = np.asarray(spans, np.int32).reshape(-1, 2)
  return ids, offsets
