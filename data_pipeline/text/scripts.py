"""Script-aware text rules: where sentences end, how wrapped lines join, optional NFKC.

Latin text ends a sentence at . ! or ? (optionally followed by one closing quote or
bracket) when whitespace and then an uppercase letter, digit or opening quote follow:
simple and predictable ("Dr. Smith" is split wrongly, which costs pretraining little).

Chinese and Japanese text has no spaces, so neither rule above nor whitespace can find its
sentences. A CJK sentence ends at 。！？ (or the half-width ｡), at the ellipsis ……, at a
half-width ! or ? right after a CJK character, and, when asked (`semicolon_ends_sentence`), at
；. Runs of enders (？！, 。。。) stay together, and closing quotes and brackets right after
an ender (」』”’）】》) stay on the sentence they close. The Japanese comma 、 and the
Chinese comma ， never end a sentence. A mixed Chinese/English paragraph is split by both
rules (a Latin ender followed by whitespace and a CJK character also ends a sentence).

Joining hard-wrapped lines: no space where both sides of the line break are CJK
(ideographs, kana, CJK punctuation), since Chinese and Japanese put none between words and
a space would teach SentencePiece a word boundary there; one space elsewhere. Korean
(Hangul) separates words with spaces and joins like Latin text.

NFKC (off by default) maps full-width ASCII to ASCII (Ｐｙｔｈｏｎ２０２４ -> Python2024),
half-width katakana to full-width, and other compatibility forms. It runs after splitting,
because it also rewrites sentence enders (！ -> !, …… -> ......).
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata

import numpy as np

# Ideographs (the ranges google-research/bert's tokenizer treats as Chinese characters)
# and Japanese kana, as inclusive code point ranges.
_CJK_LETTER_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF),
                      (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                      (0x2F800, 0x2FA1F), (0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF),
                      (0xFF65, 0xFF9F))
# CJK Symbols and Punctuation (、。「」《》...) and the full-width forms (，！？（）：；).
_CJK_PUNCT_RANGES = ((0x3000, 0x303F), (0xFF01, 0xFF64), (0xFFE0, 0xFFEE))


def _char_class(ranges) -> str:
  return "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in ranges)


_CJK_LETTERS = _char_class(_CJK_LETTER_RANGES)
_CJK_PUNCT = _char_class(_CJK_PUNCT_RANGES)
# Marks both scripts use (… — “ ” ‘ ’): CJK only next to a CJK character.
_SHARED_PUNCT = "\u2026\u2014\u201c\u201d\u2018\u2019"
_CJK_LETTER_RE = re.compile(f"[{_CJK_LETTERS}]")
_CJK_STRICT_RE = re.compile(f"[{_CJK_LETTERS}{_CJK_PUNCT}]")
_CJK_ANY_RE = re.compile(f"[{_CJK_LETTERS}{_CJK_PUNCT}{_SHARED_PUNCT}]")
_CLOSERS = "」』”’）】》〉〕〗〙〛\uff63\"')\\]"  # \uff63: half-width 」


@dataclasses.dataclass(frozen=True)
class TextRules:
  """Options of the splitting and normalising rules (recorded in prepared manifests)."""
  semicolon_ends_sentence: bool = False  # ；(and ; after a CJK character) ends a sentence
  nfkc: bool = False                     # Unicode NFKC on every sentence, after splitting

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


DEFAULT_RULES = TextRules()


def is_cjk_letter(char: str) -> bool:
  """True for ideographs and kana (not punctuation)."""
  return bool(_CJK_LETTER_RE.fullmatch(char))


def is_cjk(char: str) -> bool:
  """True for ideographs, kana and CJK / full-width punctuation."""
  return bool(_CJK_STRICT_RE.fullmatch(char))


def _joins_without_space(left: str, right: str) -> bool:
  return (bool(_CJK_ANY_RE.fullmatch(left)) and bool(_CJK_ANY_RE.fullmatch(right))
          and (is_cjk(left) or is_cjk(right)))


def cjk_mask(text: str) -> np.ndarray:
  """bool per character of `text`: `is_cjk` (ideograph, kana or CJK punctuation), vectorised."""
  cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
  mask = np.zeros(len(cp), dtype=bool)
  for lo, hi in _CJK_LETTER_RANGES + _CJK_PUNCT_RANGES:
    mask |= (cp >= lo) & (cp <= hi)
  return mask


def count_cjk_letters(text: str) -> int:
  """Ideographs and kana in `text`."""
  return len(_CJK_LETTER_RE.findall(text))


def _space_count(text: str) -> int:
  # str.split() splits on exactly the characters str.isspace() accepts; in C, not per char.
  return len(text) - sum(map(len, text.split()))


def cjk_fraction(text: str) -> float:
  """Share of the non-space characters of `text` that are ideographs or kana."""
  visible = len(text) - _space_count(text)
  return count_cjk_letters(text) / visible if visible else 0.0


def _splitter(semicolon: bool) -> re.Pattern:
  enders = "。！？｡" + ("；" if semicolon else "")
  half = "!?" + (";" if semicolon else "")
  return re.compile(
      # CJK enders (or ……), the rest of their run, closers; then any text follows.
      rf"(?:[{enders}]|\u2026\u2026)[{enders}{half}\u2026]*[{_CLOSERS}]*\s*(?=\S)"
      # Half-width ! ? right after a CJK character, when text follows.
      rf"|(?<=[{_CJK_LETTERS}])[{half}]+[{_CLOSERS}]*\s*(?=\S)"
      # Latin: . ! ? (one closer), whitespace, then a capital, digit, opening quote or CJK.
      rf"|[.!?][\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9]|[{_CJK_LETTERS}])")


_SPLITTERS = {s: _splitter(s) for s in (False, True)}


def split_sentences(text: str, rules: TextRules = DEFAULT_RULES) -> list[str]:
  """Running text (one line or joined lines) -> its sentences, stripped, none empty.

  Whitespace runs inside a sentence become one space; spaces the text has between CJK
  characters are kept (the text put them there).
  """
  text = " ".join(text.split())
  sentences, start = [], 0
  for match in _SPLITTERS[rules.semicolon_ends_sentence].finditer(text):
    sentences.append(text[start:match.end()].strip())
    start = match.end()
  sentences.append(text[start:].strip())
  if rules.nfkc:
    sentences = [" ".join(unicodedata.normalize("NFKC", s).split()) for s in sentences]
  return [s for s in sentences if s]


def join_lines(lines) -> str:
  """Hard-wrapped lines of one paragraph -> one line: no space at a break between two CJK
  characters (ideographs, kana, CJK punctuation), one space at any other break."""
  out = []
  for line in lines:
    line = " ".join(line.split())
    if not line:
      continue
    if out and not _joins_without_space(out[-1][-1], line[0]):
      out.append(" ")
    out.append(line)
  return "".join(out)


def normalize(text: str, rules: TextRules = DEFAULT_RULES) -> str:
  """One piece of text (a fine-tuning field, a BERT-format sentence) under `rules`."""
  text = " ".join(text.split())
  return " ".join(unicodedata.normalize("NFKC", text).split()) if rules.nfkc else text
