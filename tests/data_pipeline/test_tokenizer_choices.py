"""What the tokenizer trainers choose and say, on real Chinese (CMRC 2018 contexts,
tests/data/README.md): SentencePiece normalises only as --nfkc says, has no lone ▁ per
Chinese sentence, and the prepared manifest names its rule; WordPiece says when its
vocabulary is smaller than asked, and loads without warnings."""
import json
import os
import warnings

import pytest
from tests.helpers.data import write_vocab

from data_pipeline import prepare as prepare_lib
from data_pipeline.text import scripts as text_scripts
from data_pipeline.text.tokenizer import (load_tokenizer, read_tokenizer_manifest,
                                      train_sentencepiece, train_wordpiece)

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


@pytest.fixture(scope="module")
def chinese():
  with open(os.path.join(DATA, "cmrc2018_dev_sample.json"), encoding="utf-8") as f:
    articles = json.load(f)["data"]
  contexts = [p["context"] for a in articles for p in a["paragraphs"]]
  return [s for c in contexts for s in text_scripts.split_sentences(c)]


@pytest.fixture(scope="module")
def spm_models(chinese, tmp_path_factory):
  root = tmp_path_factory.mktemp("spm")
  return {nfkc: train_sentencepiece(iter(chinese[:-40]), str(root / str(nfkc)), 1200,
                                    nfkc=nfkc, num_threads=1)
          for nfkc in (False, True)}


def test_sentencepiece_normalises_only_with_nfkc(spm_models, chinese):
  plain, nfkc = (load_tokenizer(spm_models[k]) for k in (False, True))
  text = "北京，（上海）："
  assert "".join(plain.id_to_token(i) for i in plain.encode(text)) == text
  assert plain.decode(plain.encode(text)) == text
  assert nfkc.decode(nfkc.encode(text)) == "北京,(上海):"
  assert plain.describe()["normalization_rule_name"] == "identity"
  assert nfkc.describe()["normalization_rule_name"] == "nmt_nfkc"
  manifest = read_tokenizer_manifest(os.path.dirname(spm_models[False]))
  assert manifest["normalization_rule_name"] == "identity"
  assert manifest["normalization_rule_reason"] == "nfkc=False"


def test_no_lone_word_mark_at_chinese_sentence_starts(spm_models, chinese):
  tok = load_tokenizer(spm_models[False])
  assert read_tokenizer_manifest(os.path.dirname(spm_models[False]))["add_dummy_prefix"] is False
  held_out = chinese[-40:]
  pieces = [[tok.id_to_token(i) for i in tok.encode(s)] for s in held_out]
  # With SentencePiece's dummy prefix, most of these started with a lone ▁ piece.
  assert sum(p[0] == "\u2581" for p in pieces) == 0
  assert all(tok.decode(tok.encode(s)) == s for s in held_out
             if tok.unk_id not in tok.encode(s))


def test_english_keeps_the_dummy_prefix(tmp_path):
  sentences = [f"The {w} number {i} reads the arguments." for i in range(200)
               for w in ("parser", "module", "thread")]
  tok = load_tokenizer(train_sentencepiece(iter(sentences), str(tmp_path), 40, num_threads=1))
  assert tok.describe()["add_dummy_prefix"] is True
  assert tok.word_starts(tok.encode("The parser reads."))[0]


def test_prepared_manifest_names_the_normalisation(spm_models, chinese, tmp_path):
  corpus = tmp_path / "zh.txt"
  corpus.write_text("\n".join(chinese[:6]) + "\n\n" + "\n".join(chinese[6:12]) + "\n")
  manifest = prepare_lib.prepare(str(tmp_path / "out"), spm_models[False], inputs=str(corpus),
                                 options=prepare_lib.PrepareOptions(eval_fraction=0.0,
                                                                    progress=False))
  assert manifest["tokenizer"]["normalization_rule_name"] == "identity"
  assert manifest["tokenizer"]["add_dummy_prefix"] is False


def test_wordpiece_says_when_its_vocabulary_is_smaller_than_asked(chinese, tmp_path):
  with pytest.warns(UserWarning, match=r"has [\d,]+ entries, fewer than the 21,128 asked.*"
                    r"every CJK character a token"):
    path = train_wordpiece(iter(chinese), str(tmp_path), 21128)
  manifest = read_tokenizer_manifest(str(tmp_path))
  assert manifest["vocab_size"] < manifest["requested_vocab_size"] == 21128
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    train_wordpiece(iter(chinese), str(tmp_path / "fits"), 300)
  assert not caught, [str(w.message) for w in caught]


def test_wordpiece_loads_and_encodes_without_warnings(tmp_path):
  vocab = write_vocab(str(tmp_path / "vocab.txt"))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tok = load_tokenizer(vocab)
    tok.encode_batch(["hello world", "北京"])
    tok.encode_with_offsets(["hello world"])
  assert not caught, [str(w.message) for w in caught]


@pytest.mark.parametrize("nfkc", [False, True])
def test_exported_tokenizer_json_encodes_chinese_as_ours(spm_models, chinese, nfkc):
  # transformers reads the exported tokenizer.json: same ids and character offsets on real
  # Chinese, with the identity or NFKC rule and without the dummy prefix.
  from data_pipeline.text.hf_tokenizer import build_sentencepiece_tokenizer_json
  tok = load_tokenizer(spm_models[nfkc])
  fast = build_sentencepiece_tokenizer_json(tok)
  texts = chinese[-40:] + ["Hello world 北京，（上海）"]
  for text, (ids, offsets) in zip(texts, tok.encode_with_offsets(texts)):
    encoding = fast.encode(text, add_special_tokens=False)
    assert (encoding.ids, [tuple(o) for o in encoding.offsets]) == (ids, offsets), text
