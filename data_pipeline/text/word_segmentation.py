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

from data_pipeline.text import scripts as text_scripts

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


# Python's str.isspace() code points.
_SPACES = np.array([*range(9, 14), *range(28, 33), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                    0x2028, 0x2029, 0x202F, 0x205F, 0x3000], dtype=np.uint32)


def word_start_flags(text: str, ids: Sequence[int], spans: Sequence[tuple[int, int]],
                     tokenizer_starts: np.ndarray, segment) -> np.ndarray:
  """bool per token of `text` (ids with their [start, end) character spans): does it start
  a word? The rules are in the module docstring."""
  return word_start_flags_batch([text], [(ids, spans)], tokenizer_starts, segment)[0]


def word_start_flags_batch(texts: Sequence[str], encoded, tokenizer_starts: np.ndarray,
                           segment) -> list[np.ndarray]:
  """`word_start_flags` for many texts at once ([(ids, spans)] per text), vectorised over
  all of them: sentences are short, and per-sentence NumPy calls would cost more than the
  work."""
  text = "".join(texts)
  sent_start = np.concatenate([[0], np.cumsum([len(t) for t in texts])]).astype(np.int64)
  word_lengths = []
  for t in texts:
    words = [len(w) for w in segment(t)]
    if sum(words) != len(t):
      raise ValueError(f"the word segmenter's words do not add up to the text {t[:40]!r}")
    word_lengths.extend(words)
  boundary = np.zeros(len(text) + 1, dtype=bool)
  boundary[np.concatenate([[0], np.cumsum(word_lengths)]).astype(np.int64)] = True
  cjk = np.append(text_scripts.cjk_mask(text), False)  # index len(text): past the end
  cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
  visible = np.concatenate([[0], np.cumsum(~np.isin(cp, _SPACES))])

  counts = [len(ids) for ids, _ in encoded]
  if not sum(counts):
    return [np.zeros(0, dtype=bool) for _ in counts]
  sentence = np.repeat(np.arange(len(texts)), counts)
  base = sent_start[sentence]
  span = np.concatenate([np.asarray(spans, np.int64).reshape(-1, 2) for _, spans in encoded])
  start = np.minimum(span[:, 0] + base, sent_start[sentence + 1])
  end = np.maximum(span[:, 1] + base, start)
  ids = np.concatenate([np.asarray(ids, np.int64) for ids, _ in encoded])
  tok_start = np.asarray(tokenizer_starts, dtype=bool)[ids]
  own = visible[end] > visible[start]  # the token has characters of its own
  first_cjk = (end > start) & cjk[start]
  after_cjk = (start > base) & cjk[np.maximum(start - 1, 0)]
  flags = np.where(first_cjk, boundary[start], tok_start | after_cjk)
  bare = ~own & tok_start
  follows_bare = np.zeros_like(flags)
  follows_bare[1:] = bare[:-1] & (sentence[1:] == sentence[:-1])
  flags &= ~follows_bare
  return np.split(flags, np.cumsum(counts)[:-1])
