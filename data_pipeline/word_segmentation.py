"""Word starts for Chinese whole-word masking (the Chinese-BERT-wwm recipe).

Chinese has no spaces, and Google's Chinese vocabulary makes every character a token of
its own, so neither `##` nor SentencePiece's ▁ tells where a word ends. At prepare time a
word segmenter (jieba: offline, its dictionary ships in the package) cuts each sentence
into words, and each token gets a flag "starts a word":

  * a token whose first character is CJK starts a word when a segmenter word starts at
    that character;
  * any other token (a Latin word, digits inside Chinese text) keeps the tokenizer's own
    rule (`word_start_table`: no `##`, or a leading ▁), and also starts a word right after
    a CJK character (the script changes);
  * a token with no characters of its own (SentencePiece's bare ▁ before a word) starts
    the word that follows, which is then its continuation.

The flags are stored beside the tokens in the shards (records.py) and used by masking.py.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipeline import text_scripts

SEGMENTERS = ("jieba",)


class SegmenterError(ValueError):
  """The requested word segmenter is unknown or not installed."""


def load_segmenter(name: str):
  """-> a function text -> list of words (concatenating to the text)."""
  if name not in SEGMENTERS:
    raise SegmenterError(f"word_segmenter={name!r} is not one of {SEGMENTERS}")
  try:
    import jieba  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SegmenterError(
        "Chinese whole-word segmentation needs jieba, which is not installed; install the "
        "text extra: pip install 'bert-jax[text]' (or pip install jieba)") from None
  import logging  # pylint: disable=import-outside-toplevel
  jieba.setLogLevel(logging.WARNING)  # Its dictionary-loading banner is not news.
  return lambda text: list(jieba.cut(text, HMM=True))


def word_boundaries(words: Sequence[str]) -> np.ndarray:
  """Character offsets where the segmenter's words start (bool[len(text) + 1])."""
  lengths = np.fromiter((len(w) for w in words), np.int64, len(words))
  starts = np.zeros(int(lengths.sum()) + 1, dtype=bool)
  starts[np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(words) else [0]] = True
  return starts


def word_start_flags(text: str, ids: Sequence[int], spans: Sequence[tuple[int, int]],
                     tokenizer_starts: np.ndarray, segment) -> np.ndarray:
  """bool per token of `text` (ids with their character spans): does it start a word?"""
  boundary = word_boundaries(segment(text))
  if len(boundary) != len(text) + 1:
    raise ValueError("the word segmenter's words do not add up to the text")
  flags = np.zeros(len(ids), dtype=bool)
  previous_bare = False
  for i, (token_id, (start, end)) in enumerate(zip(ids, spans)):
    first = text[start] if end > start and start < len(text) else ""
    if first and text_scripts.is_cjk(first):
      flag = bool(boundary[start])
    else:
      flag = bool(tokenizer_starts[token_id]) or (
          start > 0 and text_scripts.is_cjk(text[start - 1]))
    if previous_bare:
      flag = False
    flags[i] = flag
    previous_bare = not text[start:end].strip() and bool(tokenizer_starts[token_id])
  return flags
