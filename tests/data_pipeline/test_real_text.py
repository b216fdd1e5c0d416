"""Tokenizers and word starts against their references on real public text (CMRC 2018 and
SQuAD dev contexts, tests/data/README.md): WordPiece ids equal transformers' BertTokenizer
(the pure-Python reference) and every token's offsets point at its own characters;
Chinese word starts equal jieba's words."""
import json
import os
import unicodedata

import jieba
import pytest

from data_pipeline.text import scripts as text_scripts
from data_pipeline.text import word_segmentation
from data_pipeline.text.tokenizer import load_tokenizer, train_wordpiece

from tests.helpers import DATA


def _contexts(name):
  with open(os.path.join(DATA, name), encoding="utf-8") as f:
    return [p["context"] for a in json.load(f)["data"] for p in a["paragraphs"]]


@pytest.fixture(scope="module")
def texts():
  chinese = _contexts("cmrc2018_dev_sample.json")
  english = _contexts("squad_v2_dev_sample.json") + _contexts("squad_v1_dev_sample.json")
  return {"zh": chinese, "en": english}


def _surface(token):
  return token[2:] if token.startswith("##") else token


def _normalised(text, lowercase):
  if not lowercase:
    return text
  text = unicodedata.normalize("NFD", text.lower())
  return "".join(c for c in text if unicodedata.category(c) != "Mn")


@pytest.mark.parametrize("lowercase", [True, False])
def test_wordpiece_ids_and_offsets_on_real_chinese_and_english(tmp_path, texts, lowercase):
  from transformers import BertTokenizer
  sample = texts["zh"][:40] + texts["en"]
  sentences = [s for t in sample for s in text_scripts.split_sentences(t)]
  vocab = train_wordpiece(iter(sentences), str(tmp_path), 2000, lowercase=lowercase)
  ours = load_tokenizer(vocab)
  reference = BertTokenizer(vocab, do_lower_case=lowercase)
  checked = 0
  for text, (ids, spans) in zip(sample, ours.encode_with_offsets(sample)):
    assert ids == reference.encode(text, add_special_tokens=False), text[:40]
    for token_id, (start, end) in zip(ids, spans):
      if token_id == ours.unk_id:
        continue
      token = ours.id_to_token(token_id)
      assert _normalised(text[start:end], lowercase) == _surface(token), (
          text[start:end], token)
      checked += 1
  assert checked > 10_000


def _jieba_starts(text):
  starts, position = set(), 0
  for word in jieba.cut(text):
    starts.add(position)
    position += len(word)
  return starts


def test_chinese_word_starts_are_jiebas_words_on_real_text(tmp_path, texts):
  sample = texts["zh"]
  sentences = [s for t in sample for s in text_scripts.split_sentences(t)]
  tok = load_tokenizer(train_wordpiece(iter(sentences), str(tmp_path), 1200))
  segment = word_segmentation.load_segmenter("jieba")
  encoded = tok.encode_with_offsets(sentences)
  flags = word_segmentation.word_start_flags_batch(sentences, encoded, tok.word_start_table(),
                                                   segment)
  compared = multi_character_words = 0
  for sentence, (ids, spans), sentence_flags in zip(sentences, encoded, flags):
    starts = _jieba_starts(sentence)
    for (start, end), flag in zip(spans, sentence_flags):
      if end > start and text_scripts.is_cjk_letter(sentence[start]):
        assert flag == (start in starts), (sentence, sentence[start])
        compared += 1
    multi_character_words += sum(len(w) > 1 for w in jieba.cut(sentence))
  assert compared > 5000 and multi_character_words > 1000
