"""One tokenizer interface over SentencePiece models and WordPiece `vocab.txt` files.

Both kinds expose what the rest of the pipeline needs and nothing more: encode text to
ids (optionally with each token's character offset, for Chinese word starts), BERT's
special ids ([PAD] must be 0), the vocabulary size, a per-id "starts a word" table for
whole-word masking, and a stable identity (a hash of the tokenizer file plus the options
that change its output), recorded in every prepared dataset.

Training: `train_sentencepiece` (unigram / BPE) and `train_wordpiece` (a BERT vocab.txt
with BERT's own normaliser and pre-tokeniser, so every CJK character is a token of its
own, as in Google's Chinese and multilingual BERT). Both choose what a CJK-heavy corpus
needs (SentencePiece's character_coverage 0.9995 instead of 1.0; a WordPiece alphabet
large enough for thousands of characters) and write what they chose into
`tokenizer_manifest.json` beside the model.
"""
from __future__ import annotations

import abc
import glob
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from data_pipeline.fileio import write_text_atomic
from data_pipeline.text import scripts as text_scripts

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SP_WORD_MARK = "\u2581"  # SentencePiece's visible space: a piece starting with it starts a word.
TOKENIZER_MANIFEST = "tokenizer_manifest.json"
# A corpus whose non-space characters are at least this share ideographs / kana is
# "CJK-heavy": thousands of distinct characters, each frequent enough to matter.
CJK_HEAVY_FRACTION = 0.2
# SentencePiece's recommendation: 0.9995 for languages with rich character sets (Chinese,
# Japanese), 1.0 for the others (every character of the corpus in the vocabulary).
CJK_CHARACTER_COVERAGE = 0.9995
DEFAULT_CHARACTER_COVERAGE = 1.0


class TokenizerError(ValueError):
  """A tokenizer file is missing, unreadable or lacks BERT's special tokens."""


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _char_of_byte(text: str) -> np.ndarray:
  """[n_bytes + 1] int: the character each UTF-8 byte of `text` belongs to (the last entry,
  one past the end, maps to len(text))."""
  lengths = [len(ch.encode("utf-8")) for ch in text]
  return np.repeat(np.arange(len(text) + 1), lengths + [1])


def _trim(text: str, begin: int, end: int) -> tuple[int, int]:
  """[begin, end) without its leading and trailing whitespace; only whitespace: the empty
  span where the next character starts."""
  while begin < end and text[begin].isspace():
    begin += 1
  while end > begin and text[end - 1].isspace():
    end -= 1
  if begin == end:
    return end, end
  return begin, end


class Tokenizer(abc.ABC):
  """Common interface. Subclasses fill the attributes in `__init__`."""

  kind: str
  path: str
  vocab_size: int
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  identity: str  # "<kind>:<sha256 of file and options>", stable across machines.

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS]/[SEP]."""

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def encode_with_offsets(self, texts: Sequence[str], *, trim_whitespace: bool = False
                          ) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Per text: its ids (exactly `encode`'s) and, per token, the [start, end) character
    span of the text it came from (end == start for a token with no characters of its own,
    e.g. a bare ▁).

    SentencePiece folds the space before a word into its piece ("▁Paris" spans " Paris").
    Word starts read those spans as they are; `trim_whitespace=True` trims each span to
    its non-space characters ("Paris"), and gives a whitespace-only piece the empty span at
    the next character: what extractive QA cuts its answers by. (WordPiece spans never
    hold whitespace.)"""
    encoded = self._encode_with_offsets(texts)
    if trim_whitespace:
      encoded = [(ids, [_trim(text, b, e) for b, e in spans])
                 for text, (ids, spans) in zip(texts, encoded)]
    return encoded

  @abc.abstractmethod
  def _encode_with_offsets(self, texts: Sequence[str]
                           ) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """`encode_with_offsets` as the library reports the spans."""

  @abc.abstractmethod
  def id_to_token(self, token_id: int) -> str:
    """The vocabulary entry of `token_id`."""

  @abc.abstractmethod
  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`."""

  def tokens(self) -> list[str]:
    return [self.id_to_token(i) for i in range(self.vocab_size)]

  @abc.abstractmethod
  def word_start_table(self) -> np.ndarray:
    """bool[vocab_size]: True where a token begins a word (specials count as starts)."""

  def word_starts(self, ids: Sequence[int]) -> np.ndarray:
    """bool per id: True where that token begins a new word."""
    return self.word_start_table()[np.asarray(ids, dtype=np.int64)]

  @property
  def special_ids(self) -> dict[str, int]:
    return {"pad_id": self.pad_id, "unk_id": self.unk_id, "cls_id": self.cls_id,
            "sep_id": self.sep_id, "mask_id": self.mask_id}

  def describe(self) -> dict:
    """JSON-able identity, recorded in manifests and checkpoints."""
    return {"kind": self.kind, "identity": self.identity, "vocab_size": self.vocab_size,
            "file": os.path.basename(self.path), **self.special_ids,
            **self._options()}

  def _options(self) -> dict:
    return {}

  def save(self, output_dir: str) -> str:
    """Copies the tokenizer file(s) into `output_dir`; returns the path to load it back."""
    os.makedirs(output_dir, exist_ok=True)
    target = os.path.join(output_dir, os.path.basename(self.path))
    if os.path.abspath(target) != os.path.abspath(self.path):
      shutil.copyfile(self.path, target)
    with open(os.path.join(output_dir, "tokenizer_identity.json"), "w") as f:
      json.dump(self.describe(), f, indent=1, sort_keys=True)
    return target

  def _check_specials(self, lookup) -> None:
    ids = {}
    for token in SPECIAL_TOKENS:
      token_id = lookup(token)
      if token_id is None:
        raise TokenizerError(
            f"{self.path}: tokenizer lacks the special token {token}; BERT needs all of "
            f"{', '.join(SPECIAL_TOKENS)} (train one with launch/train_tokenizer.py)")
      ids[token] = token_id
    if ids["[PAD]"] != 0:
      raise TokenizerError(f"{self.path}: [PAD] has id {ids['[PAD]']}; it must be id 0")
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        ids[t] for t in SPECIAL_TOKENS)


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece `.model` (unigram or BPE) with BERT's special tokens reserved."""

  def __init__(self, path: str):
    import sentencepiece as spm
    self.kind = "sentencepiece"
    self.path = path
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.Load(path)
    except (OSError, RuntimeError) as e:
      raise TokenizerError(f"{path}: not a readable SentencePiece model ({e})") from e
    self.vocab_size = self._sp.GetPieceSize()

    def lookup(token):
      token_id = self._sp.PieceToId(token)
      # PieceToId answers unk_id for unknown pieces; only a real match counts.
      return token_id if self._sp.IdToPiece(token_id) == token else None

    self._check_specials(lookup)
    self.identity = "sentencepiece:" + _file_sha256(path)
    self._word_start = None
    self._normalizer = None

  def _options(self) -> dict:
    """The model's normalisation (SentencePiece applies it to all text it encodes)."""
    if self._normalizer is None:
      from sentencepiece import sentencepiece_model_pb2
      proto = sentencepiece_model_pb2.ModelProto()
      proto.ParseFromString(self._sp.serialized_model_proto())
      spec = proto.normalizer_spec
      self._normalizer = {"normalization_rule_name": spec.name or "nmt_nfkc",
                          "add_dummy_prefix": spec.add_dummy_prefix}
    return dict(self._normalizer)

  def encode(self, text: str) -> list[int]:
    return self._sp.EncodeAsIds(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.Encode(list(texts))

  def _encode_with_offsets(self, texts):
    out = []
    for text, proto in zip(texts, self._sp.Encode(list(texts), return_type="proto")):
      # SentencePiece reports UTF-8 byte offsets; map them to characters.
      char_of_byte = _char_of_byte(text)
      out.append(([p.id for p in proto.pieces],
                  [(int(char_of_byte[p.begin]), int(char_of_byte[p.end])) for p in proto.pieces]))
    return out

  def id_to_token(self, token_id: int) -> str:
    return self._sp.IdToPiece(int(token_id))

  def decode(self, ids: Iterable[int]) -> str:
    return self._sp.DecodeIds([int(i) for i in ids])

  def word_start_table(self) -> np.ndarray:
    if self._word_start is None:
      table = np.array([p.startswith(_SP_WORD_MARK) for p in self.tokens()], dtype=bool)
      table[list(self.special_ids.values())] = True
      self._word_start = table
    return self._word_start


def _vocab_is_cased(tokens: Sequence[str]) -> bool:
  """Google's cased checkpoints keep capitalised wordpieces; uncased ones have none."""
  return any(t.lower() != t for t in tokens if not (t.startswith("[") and t.endswith("]")))


class WordPieceTokenizer(Tokenizer):
  """A BERT `vocab.txt` (Google or Hugging Face checkpoints), run by `tokenizers`.

  Casing: `lowercase=None` reads `do_lower_case` from a `tokenizer_config.json` beside the
  vocabulary if present, otherwise infers it from the vocabulary (an uncased vocabulary
  has no capitalised wordpieces), which is what the checkpoint was trained with.
  """

  def __init__(self, path: str, lowercase: bool | None = None):
    self.kind = "wordpiece"
    self.path = path
    try:
      with open(path, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    except (OSError, UnicodeDecodeError) as e:
      raise TokenizerError(f"{path}: not a readable UTF-8 vocab.txt ({e})") from e
    if not vocab:
      raise TokenizerError(f"{path}: empty vocabulary")
    if lowercase is None:
      config = os.path.join(os.path.dirname(path), "tokenizer_config.json")
      if os.path.exists(config):
        with open(config, encoding="utf-8") as f:
          lowercase = bool(json.load(f).get("do_lower_case", not _vocab_is_cased(vocab)))
      else:
        lowercase = not _vocab_is_cased(vocab)
    self.lowercase = lowercase
    self._vocab = vocab
    index = {}
    for i, token in enumerate(vocab):
      index.setdefault(token, i)  # First occurrence wins, as in transformers.
    self._check_specials(index.get)
    # strip_accents=None follows lowercase, exactly like BertTokenizer's default.
    self._tok = bert_wordpiece(path, lowercase)
    self.vocab_size = len(vocab)
    self.identity = "wordpiece:" + hashlib.sha256(
        (_file_sha256(path) + f":lowercase={lowercase}").encode()).hexdigest()
    self._word_start = None

  def _options(self) -> dict:
    return {"lowercase": self.lowercase}

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def _encode_with_offsets(self, texts):
    return [(e.ids, [tuple(o) for o in e.offsets])
            for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def id_to_token(self, token_id: int) -> str:
    return self._vocab[int(token_id)]

  def decode(self, ids: Iterable[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def word_start_table(self) -> np.ndarray:
    if self._word_start is None:
      self._word_start = np.array([not t.startswith("##") for t in self._vocab], dtype=bool)
    return self._word_start

  def save(self, output_dir: str) -> str:
    target = super().save(output_dir)
    # The casing is part of the identity; keep it next to the copied vocabulary.
    with open(os.path.join(output_dir, "tokenizer_config.json"), "w") as f:
      json.dump({"do_lower_case": self.lowercase}, f)
    return target


def bert_wordpiece(vocab_path: str, lowercase: bool):
  """`tokenizers`' BERT WordPiece pipeline for a vocab.txt, with BertTokenizer's options
  (strip_accents=None follows lowercase). The vocabulary goes in as a dict read by
  WordPiece.read_file: handing WordPiece a file path is deprecated (a warning per load)."""
  from tokenizers import BertWordPieceTokenizer
  from tokenizers.models import WordPiece
  return BertWordPieceTokenizer(WordPiece.read_file(vocab_path), lowercase=lowercase,
                                clean_text=True, handle_chinese_chars=True,
                                strip_accents=None)


def load_tokenizer(path: str, lowercase: bool | None = None) -> Tokenizer:
  """Loads a SentencePiece `.model`, a WordPiece `vocab.txt`, or a directory holding one."""
  if os.path.isdir(path):
    candidates = sorted(glob.glob(os.path.join(path, "*.model"))) + (
        [os.path.join(path, "vocab.txt")] if os.path.exists(os.path.join(path, "vocab.txt"))
        else [])
    if not candidates:
      raise TokenizerError(f"{path}: directory holds no SentencePiece *.model or vocab.txt")
    path = candidates[0]
  if not os.path.exists(path):
    raise TokenizerError(f"{path}: tokenizer file not found")
  if path.endswith(".txt"):
    return WordPieceTokenizer(path, lowercase=lowercase)
  return SentencePieceTokenizer(path)


def _spool(sentences: Iterable[str], output_dir: str) -> tuple[str, int, float]:
  """Streams the non-empty sentences to a temporary file in `output_dir` (both trainers
  read files); returns (path, number of sentences, CJK share of their characters)."""
  os.makedirs(output_dir, exist_ok=True)
  count, chars, cjk = 0, 0, 0
  with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False,
                                   dir=output_dir) as f:
    for sentence in sentences:
      sentence = sentence.strip()
      if sentence:
        f.write(sentence + "\n")
        count += 1
        visible = len(sentence) - sum(c.isspace() for c in sentence)
        chars += visible
        cjk += text_scripts.count_cjk_letters(sentence)
  if count == 0:
    os.remove(f.name)
    raise TokenizerError("no text to train the tokenizer on (all inputs empty)")
  return f.name, count, cjk / max(chars, 1)


def _write_tokenizer_manifest(output_dir: str, entries: dict) -> None:
  write_text_atomic(os.path.join(output_dir, TOKENIZER_MANIFEST),
                    json.dumps(entries, indent=1, sort_keys=True))


def read_tokenizer_manifest(output_dir: str) -> dict:
  """What a trainer chose and measured (tokenizer_manifest.json), {} if there is none."""
  path = os.path.join(output_dir, TOKENIZER_MANIFEST)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _sentencepiece_choices(cjk: float, character_coverage: float | None, nfkc: bool) -> dict:
  """What SentencePiece is told for a corpus with CJK share `cjk`, and why (the manifest)."""
  heavy = cjk >= CJK_HEAVY_FRACTION
  share = f"{cjk:.1%} of the characters are CJK ({'>=' if heavy else '<'} {CJK_HEAVY_FRACTION:.0%})"
  if character_coverage is None:
    coverage = CJK_CHARACTER_COVERAGE if heavy else DEFAULT_CHARACTER_COVERAGE
    coverage_reason = f"auto: {share}"
  else:
    coverage, coverage_reason = character_coverage, "given"
  return {
      "character_coverage": coverage, "character_coverage_reason": coverage_reason,
      # The text rules already applied NFKC or not (--nfkc); SentencePiece's default rule
      # (nmt_nfkc) would apply it anyway, turning full-width ，（） into , ( ).
      "normalization_rule_name": "nmt_nfkc" if nfkc else "identity",
      "normalization_rule_reason": f"nfkc={nfkc}",
      # The dummy prefix makes every sentence start like a word after a space. Chinese and
      # Japanese put no spaces between words, so it mostly adds a lone ▁ token per sentence
      # (on CMRC 2018 contexts: 1,338 lone ▁ of 54,334 tokens with it, 142 without).
      "add_dummy_prefix": not heavy,
      "add_dummy_prefix_reason": f"auto: {share}",
  }


def train_sentencepiece(sentences: Iterable[str], output_dir: str, vocab_size: int = 32000,
                        model_type: str = "unigram", max_sentences: int = 2_000_000,
                        num_threads: int | None = None,
                        character_coverage: float | None = None, nfkc: bool = False) -> str:
  """Trains a SentencePiece model with BERT's specials at ids 0-4; returns the `.model` path.

  `sentences` is streamed to a temporary file (SentencePiece trains from files); at most
  `max_sentences` of them are sampled by SentencePiece itself, which bounds memory.
  `character_coverage=None` chooses 0.9995 for a CJK-heavy corpus (CJK_HEAVY_FRACTION)
  and 1.0 otherwise. The model normalises as the text rules did (`nfkc`: NFKC, else the
  identity), and a CJK-heavy corpus gets no dummy prefix (no lone ▁ at sentence starts).
  The choices and the measured CJK share go to tokenizer_manifest.json.
  """
  import sentencepiece as spm
  if model_type not in ("unigram", "bpe"):
    raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
  if character_coverage is not None and not 0.98 <= character_coverage <= 1.0:
    raise ValueError(f"character_coverage must be in [0.98, 1.0], got {character_coverage}")
  tmp, count, cjk = _spool(sentences, output_dir)
  choices = _sentencepiece_choices(cjk, character_coverage, nfkc)
  try:
    prefix = os.path.join(output_dir, "spm")
    spm.SentencePieceTrainer.Train(
        input=tmp, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
        pad_id=0, pad_piece="[PAD]", unk_id=1, unk_piece="[UNK]", bos_id=-1, eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        character_coverage=choices["character_coverage"],
        normalization_rule_name=choices["normalization_rule_name"],
        add_dummy_prefix=choices["add_dummy_prefix"],
        input_sentence_size=max_sentences, shuffle_input_sentence=True,
        num_threads=num_threads or os.cpu_count() or 1, minloglevel=2,
        # Small corpora cannot always reach the requested size; fail loudly instead of
        # shipping a smaller vocabulary than asked for.
        hard_vocab_limit=True)
  except RuntimeError as e:
    raise TokenizerError(f"SentencePiece training failed: {e}") from e
  finally:
    os.remove(tmp)
  _write_tokenizer_manifest(output_dir, {
      "kind": "sentencepiece", "model_type": model_type, "vocab_size": vocab_size,
      "file": "spm.model", "sentences": count, "cjk_fraction": round(cjk, 4), **choices})
  return prefix + ".model"


def _small_vocab_message(got: int, asked: int, sentences: int, cjk: float,
                         min_frequency: int) -> str:
  cjk_note = (" BERT's pre-tokeniser makes every CJK character a token of its own, so a "
              "Chinese vocabulary holds little more than the corpus's distinct characters."
              if cjk >= CJK_HEAVY_FRACTION else "")
  return (f"the WordPiece vocabulary has {got:,} entries, fewer than the {asked:,} asked: "
          f"the corpus ({sentences:,} sentences) has no more pieces seen at least "
          f"{min_frequency} times.{cjk_note} Train on more text for a larger vocabulary; "
          f"the model's vocab_size must be {got:,} with this one")


def train_wordpiece(sentences: Iterable[str], output_dir: str, vocab_size: int = 32000,
                    lowercase: bool = True, min_frequency: int = 2,
                    limit_alphabet: int | None = None) -> str:
  """Trains a BERT WordPiece vocabulary; returns the `vocab.txt` path.

  Uses the `tokenizers` library with BERT's normaliser (clean text, optional lowercasing
  and accent stripping) and pre-tokeniser (whitespace and punctuation, and every CJK
  character split off on its own, as `BertTokenizer` does), so the trained vocabulary
  tokenizes exactly as transformers' `BertTokenizer` does with it. Specials [PAD] [UNK]
  [CLS] [SEP] [MASK] take ids 0-4; the casing goes to tokenizer_config.json beside it.
  `limit_alphabet=None` keeps up to 1000 characters, or up to half the vocabulary for a
  CJK-heavy corpus (whose characters are whole tokens and need the room).
  """
  from tokenizers import BertWordPieceTokenizer
  if vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(f"vocab_size={vocab_size} leaves no room beside the special tokens")
  tmp, count, cjk = _spool(sentences, output_dir)
  heavy = cjk >= CJK_HEAVY_FRACTION
  if limit_alphabet is None:
    limit_alphabet = max(1000, vocab_size // 2) if heavy else 1000
  try:
    trainer = BertWordPieceTokenizer(lowercase=lowercase, clean_text=True,
                                     handle_chinese_chars=True, strip_accents=None)
    with open(tmp, encoding="utf-8") as f:
      trainer.train_from_iterator((line.rstrip("\n") for line in f), vocab_size=vocab_size,
                                  min_frequency=min_frequency, limit_alphabet=limit_alphabet,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  finally:
    os.remove(tmp)
  vocab = sorted(trainer.get_vocab().items(), key=lambda kv: kv[1])
  if len(vocab) < vocab_size:
    warnings.warn(_small_vocab_message(len(vocab), vocab_size, count, cjk, min_frequency),
                  stacklevel=2)
  if [t for t, _ in vocab[:len(SPECIAL_TOKENS)]] != list(SPECIAL_TOKENS):
    raise TokenizerError(f"WordPiece training put the special tokens at "
                         f"{[t for t, _ in vocab[:5]]}, not first")
  path = os.path.join(output_dir, "vocab.txt")
  write_text_atomic(path, "".join(t + "\n" for t, _ in vocab))
  with open(os.path.join(output_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"do_lower_case": lowercase}, f)
  _write_tokenizer_manifest(output_dir, {
      "kind": "wordpiece", "vocab_size": len(vocab), "requested_vocab_size": vocab_size,
      "file": "vocab.txt", "sentences": count, "cjk_fraction": round(cjk, 4),
      "lowercase": lowercase, "limit_alphabet": limit_alphabet,
      "cjk_characters_in_vocab": sum(len(t) == 1 and text_scripts.is_cjk_letter(t)
                                     for t, _ in vocab)})
  return path
