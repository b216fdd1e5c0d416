"""One tokenizer interface over SentencePiece models and WordPiece `vocab.txt` files.

Both kinds expose what the rest of the pipeline needs and nothing more: encode text to
ids, BERT's special ids ([PAD] must be 0), the vocabulary size, a per-id "starts a word"
table for whole-word masking, and a stable identity (a hash of the tokenizer file plus the
options that change its output), recorded in every prepared dataset.
"""
from __future__ import annotations

import abc
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SP_WORD_MARK = "\u2581"  # SentencePiece's visible space: a piece starting with it starts a word.


class TokenizerError(ValueError):
  """A tokenizer file is missing, unreadable or lacks BERT's special tokens."""


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


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

  def encode(self, text: str) -> list[int]:
    return self._sp.EncodeAsIds(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.Encode(list(texts))

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
    from tokenizers import BertWordPieceTokenizer
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
    self._tok = BertWordPieceTokenizer(path, lowercase=lowercase, clean_text=True,
                                       handle_chinese_chars=True, strip_accents=None)
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


def train_sentencepiece(sentences: Iterable[str], output_dir: str, vocab_size: int = 32000,
                        model_type: str = "unigram", max_sentences: int = 2_000_000,
                        num_threads: int | None = None) -> str:
  """Trains a SentencePiece model with BERT's specials at ids 0-4; returns the `.model` path.

  `sentences` is streamed to a temporary file (SentencePiece trains from files); at most
  `max_sentences` of them are sampled by SentencePiece itself, which bounds memory.
  """
  import sentencepiece as spm
  if model_type not in ("unigram", "bpe"):
    raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
  os.makedirs(output_dir, exist_ok=True)
  count = 0
  with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False,
                                   dir=output_dir) as f:
    tmp = f.name
    for sentence in sentences:
      sentence = sentence.strip()
      if sentence:
        f.write(sentence + "\n")
        count += 1
  try:
    if count == 0:
      raise TokenizerError("no text to train the tokenizer on (all inputs empty)")
    prefix = os.path.join(output_dir, "spm")
    spm.SentencePieceTrainer.Train(
        input=tmp, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
        pad_id=0, pad_piece="[PAD]", unk_id=1, unk_piece="[UNK]", bos_id=-1, eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"], character_coverage=0.9995,
        input_sentence_size=max_sentences, shuffle_input_sentence=True,
        num_threads=num_threads or os.cpu_count() or 1, minloglevel=2,
        # Small corpora cannot always reach the requested size; fail loudly instead of
        # shipping a smaller vocabulary than asked for.
        hard_vocab_limit=True)
  except RuntimeError as e:
    raise TokenizerError(f"SentencePiece training failed: {e}") from e
  finally:
    os.remove(tmp)
  return prefix + ".model"
