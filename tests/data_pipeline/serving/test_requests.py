"""The serving text side's own pieces: words with character offsets (Latin and Chinese)
and BIO tags to entities."""
from data_pipeline.serving import requests


def test_split_words_latin_and_chinese():
  text = "John Smith, lives in 北京市. Ok?"
  words = requests.split_words(text)
  assert [w for w, _, _ in words] == ["John", "Smith", ",", "lives", "in", "北", "京", "市", ".",
                                      "Ok", "?"]
  assert all(text[s:e] == w for w, s, e in words)
  assert requests.split_words("  \t ") == []
  assert requests.split_words("我爱北京") == [("我", 0, 1), ("爱", 1, 2), ("北", 2, 3), ("京", 3, 4)]


def test_entities_from_bio_tags_with_offsets():
  text = "我爱北京 and John Smith"
  words = requests.split_words(text)
  tags = ["O", "O", "B-LOC", "I-LOC", "O", "B-PER", "I-PER"]
  got = requests.entities(tags, [(s, e) for _, s, e in words], text)
  assert got == [{"type": "LOC", "text": "北京", "start": 2, "end": 4},
                 {"type": "PER", "text": "John Smith", "start": 9, "end": 19}]
  # An I- tag that does not continue its type starts an entity (IOB2 as seqeval reads it);
  # B- always starts one.
  got = requests.entities(["I-PER", "I-LOC", "B-LOC", "B-LOC"], [(0, 1), (2, 3), (4, 5), (6, 7)],
                          "a b c d")
  assert [(e["type"], e["text"]) for e in got] == [("PER", "a"), ("LOC", "b"), ("LOC", "c"),
                                                   ("LOC", "d")]
