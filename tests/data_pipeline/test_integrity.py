"""Data integrity as properties, for the pretraining text formats (bert, lines, paragraphs)
and the TFDS text input source.

Seeded random corpora (English words, Chinese characters, digits, punctuation) are written
with the file-level accidents real corpora have: with and without a final newline, CRLF,
a UTF-8 byte-order mark, trailing blank lines, an empty file and a file with a NUL byte
among the others, and a 1 MB line. Properties, for WordPiece and SentencePiece:
  * every input document reaches exactly one split exactly once (the multiset of prepared
    documents equals the multiset written), or its file is counted in the manifest's
    skips with its path;
  * the prepared tokens decode back to the document's (normalised) text.
"""
import collections
import os
import random

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipeline import prepare as prepare_lib, records
from data_pipeline.tfds_builder import build_local_tfds
from data_pipeline.text.tokenizer import load_tokenizer, train_sentencepiece, train_wordpiece

_WORDS = ["the", "model", "reads", "text", "BERT", "data", "Paris", "2018", "3.14", "e-mail"]
_HANZI = "我们在北京大学学习中文数据模型训练今天天气很好上海城市公司成立"
_ENDS = [".", "!", "?", "。", "！", "？"]


def _sentence(rng):
  if rng.random() < 0.5:
    body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8)))
    return body[0].upper() + body[1:] + rng.choice(_ENDS[:3])
  body = "".join(rng.choice(_HANZI) for _ in range(rng.randint(2, 15)))
  return body + rng.choice(["，", ""]) + rng.choice(_HANZI) + rng.choice(_ENDS[3:])


def _documents(rng, n):
  return [[_sentence(rng) for _ in range(rng.randint(1, 4))] for _ in range(n)]


def _layout(docs, text_format, rng):
  """The file's lines for `docs` in `text_format` (paragraph lines hard-wrapped)."""
  if text_format == "lines":
    return [" ".join(d) for d in docs]
  lines = []
  for doc in docs:
    if text_format == "bert":
      lines += doc
    else:
      text = " ".join(doc)
      cuts = sorted(rng.sample(range(1, len(text)), min(2, len(text) - 1)))
      parts = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
      lines += [p for p in parts if p.strip()] or [text]
    lines.append("")
  return lines[:-1]


def _write(path, lines, rng):
  newline = "\r\n" if rng.random() < 0.3 else "\n"
  text = newline.join(lines) + rng.choice(["", newline, newline * 3])
  data = text.encode()
  if rng.random() < 0.3:
    data = b"\xef\xbb\xbf" + data
  with open(path, "wb") as f:
    f.write(data)


def _canonical(text):
  return "".join(text.split())


def _corpus(tmp_path, text_format, seed, huge_line):
  """Writes the files; returns (glob, expected canonical documents, skipped paths)."""
  rng = random.Random(seed)
  expected, skipped = [], {}
  for k in range(rng.randint(2, 4)):
    docs = _documents(rng, rng.randint(1, 6))
    if huge_line and k == 0:
      words = " ".join(rng.choice(_WORDS) for _ in range(180_000))[:1 << 20]
      docs.append([words.rstrip() + "."])
    _write(tmp_path / f"f{k}.txt", _layout(docs, text_format, rng), rng)
    expected += [_canonical("".join(d)) for d in docs]
  (tmp_path / "g_empty.txt").write_bytes(b"")
  skipped["empty_file"] = str(tmp_path / "g_empty.txt")
  (tmp_path / "h_nul.txt").write_bytes("北京。\nA\x00B.\n".encode())
  skipped["binary_file"] = str(tmp_path / "h_nul.txt")
  return str(tmp_path / "*.txt"), expected, skipped


def _prepared_documents(data_dir, manifest):
  """Every prepared document's ids, over both splits, read back from the shards."""
  out = []
  for split in manifest["splits"].values():
    for shard, tokens in zip(split["shards"], split["tokens_per_shard"]):
      index = records.read_index(os.path.join(data_dir, shard.replace(".array_record",
                                                                      ".index.npz")))
      reader = records.TokenReader([os.path.join(data_dir, shard)], [tokens],
                                   manifest["token_dtype"], manifest["page_tokens"])
      start = 0
      for count in index["sentence_counts"]:
        length = int(index["sentence_lengths"][start:start + count].sum()) if count else 0
        first = int(index["sentence_lengths"][:start].sum())
        buffer, offsets = reader.gather(np.array([first]), np.array([length]))
        out.append(buffer[offsets[0]:offsets[0] + length])
        start += count
  return out


@pytest.fixture(scope="module")
def tokenizer_paths(tmp_path_factory):
  root = tmp_path_factory.mktemp("tok")
  rng = random.Random(99)
  sentences = [_sentence(rng) for _ in range(3000)]
  return {"wordpiece": train_wordpiece(iter(sentences), str(root / "wp"), 110,
                                       lowercase=False),
          "sentencepiece": train_sentencepiece(iter(sentences), str(root / "sp"), 200,
                                               num_threads=1, character_coverage=1.0)}


# A paragraphs file holding one wrapped paragraph is read, with this warning.
@pytest.mark.filterwarnings("ignore:.*--text_format=paragraphs, but the file has no blank")
@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
@pytest.mark.parametrize("text_format", ["bert", "lines", "paragraphs"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_document_once_and_tokens_decode_to_the_text(tmp_path, tokenizer_paths, kind,
                                                           text_format, seed):
  corpus_dir = tmp_path / "corpus"
  corpus_dir.mkdir()
  pattern, expected, skipped = _corpus(corpus_dir, text_format, seed,
                                       huge_line=(seed, text_format, kind) == (0, "lines", "sentencepiece"))
  out = str(tmp_path / "out")
  manifest = prepare_lib.prepare(out, tokenizer_paths[kind], inputs=pattern,
                                 options=prepare_lib.PrepareOptions(
                                     text_format=text_format, eval_fraction=0.3,
                                     docs_per_shard=3, progress=False))
  for reason, path in skipped.items():
    assert path in manifest["skipped"][reason]["examples"], manifest["skipped"]
  assert manifest["input_documents"] == len(expected)
  tok = load_tokenizer(out)
  got = [_canonical(tok.decode(ids)) for ids in _prepared_documents(out, manifest)]
  assert collections.Counter(got) == collections.Counter(expected)
  if seed == 0:
    assert all(manifest["splits"][s]["documents"] for s in ("train", "eval"))


class IntegrityExamples(tfds.core.GeneratorBasedBuilder):
  """A TFDS text dataset of given examples, as a public one would hold them (no download)."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, texts=(), **kwargs):
    self._texts = list(texts)
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, text in enumerate(self._texts):
      yield i, {"text": text}


def _tfds_texts(rng):
  """Seeded documents as TFDS text features: sentences joined by LF, CRLF or a space (a
  paragraph), with or without trailing newlines; some examples empty or blank. Returns
  (texts, expected canonical documents, indices of the empty examples)."""
  texts, expected, empty = [], [], []
  for i in range(rng.randint(8, 14)):
    if rng.random() < 0.2:
      texts.append(rng.choice(["", "\n", " \r\n \n"]))
      empty.append(i)
      continue
    doc = _documents(rng, 1)[0]
    texts.append(rng.choice(["\n", "\r\n", " "]).join(doc) + rng.choice(["", "\n", "\n\n"]))
    expected.append(_canonical("".join(doc)))
  return texts, expected, empty


@pytest.mark.filterwarnings("ignore:.*--text_format=paragraphs, but the file has no blank")
@pytest.mark.parametrize("kind,seed", [("wordpiece", 0), ("sentencepiece", 1)])
def test_tfds_every_example_once_and_tokens_decode_to_the_text(tmp_path, tokenizer_paths,
                                                               kind, seed):
  """TFDS text input: every non-empty example reaches exactly one split exactly once, each
  empty one is counted with its place; local files through `build_local_tfds` (with the
  file accidents above) too, their skipped files named by the builder."""
  rng = random.Random(seed)
  texts, expected, empty = _tfds_texts(rng)
  tfds_dir = str(tmp_path / "tfds")
  IntegrityExamples(texts=texts, data_dir=tfds_dir,
                     file_format="array_record").download_and_prepare()
  corpus_dir = tmp_path / "corpus"
  corpus_dir.mkdir()
  text_format = rng.choice(["bert", "lines", "paragraphs"])
  pattern, file_expected, file_skipped = _corpus(corpus_dir, text_format, seed,
                                                 huge_line=False)
  spec, build_skips = build_local_tfds(pattern, tfds_dir, text_format)
  for reason, path in file_skipped.items():
    assert path in build_skips.examples[reason]
  tok = load_tokenizer(tokenizer_paths[kind])
  for name, want, gaps in (("integrity_examples:text", expected, empty),
                           (spec, file_expected, [])):
    out = str(tmp_path / name.split(":")[0])
    manifest = prepare_lib.prepare(out, tokenizer_paths[kind], tfds_name=name,
                                   options=prepare_lib.PrepareOptions(
                                       tfds_data_dir=tfds_dir, eval_fraction=0.3,
                                       docs_per_shard=3, progress=False))
    assert manifest["input_documents"] == len(want)
    got = [_canonical(tok.decode(ids)) for ids in _prepared_documents(out, manifest)]
    assert collections.Counter(got) == collections.Counter(want)
    # TFDS stores examples shuffled: a place is the example's index in the stored split.
    source = tfds.data_source(name.split(":")[0], split="train", data_dir=tfds_dir)
    blank = [i for i in range(len(source)) if not source[i]["text"].strip()]
    assert len(blank) == len(gaps)
    where = [f"tfds:{name.split(':')[0]}/train[{i}]" for i in blank]
    assert manifest["skipped"].get("empty_tfds_example", {}).get("examples", []) == where
