"""QA windows: run_squad's doc_stride, answers across window edges, Chinese offsets."""
import numpy as np
import pytest

from data_pipeline.finetune import qa_windows as W
from data_pipeline.finetune import squad as S
from tests.helpers.data import qa_entry as _qa, squad_file as _squad


def test_lengths_are_checked():
  W.check_lengths(384, 64, 128)
  with pytest.raises(ValueError, match=r"max_query_length=61 is too large for max_seq_length=64"):
    W.check_lengths(64, 61, 16)


def test_windows_follow_run_squad_stride():
  # doc_stride is the step between window starts (not transformers' overlap).
  assert W.window_starts(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
  assert W.window_starts(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
  assert W.window_starts(3, 4, 2) == [(0, 3)]
  assert W.window_starts(10, 4, 9) == [(0, 4), (4, 4), (8, 2)]  # never skips a token
  mask = W.max_context_mask([(0, 4), (2, 4)], 6)
  # Token 2: min(2, 1)+0.04 in window 0 vs min(0, 3)+0.04 in window 1 -> window 0;
  # token 3: min(3, 0) vs min(1, 2) -> window 1.
  assert mask.astype(int).tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]


def test_answer_across_a_window_boundary_is_cls_there_and_found_in_the_other(tmp_path,
                                                                            wordpiece):
  words = [f"w{i % 10}" for i in range(12)]
  words[5:7] = ["paris", "france"]   # the answer: doc tokens 5-6
  ctx = " ".join(words)
  f = S.read_qa_file(_squad([{"context": ctx, "qas": [
      _qa("q", "where", ctx, "paris france")]}], tmp_path / "t.json"))
  # question 1 token: window = 12 - 1 - 3 = 8? use max_seq_length=10 -> 6-token windows.
  feats = W.encode_qa_examples(f.examples, wordpiece, max_seq_length=10, max_query_length=4,
                               doc_stride=4, labels=True)
  # Windows over 12 tokens, 6 long, starts 0, 4, 8 -> [0,6), [4,10), [8,12).
  assert len(feats) == 3
  starts, ends = feats.arrays["start_positions"], feats.arrays["end_positions"]
  # Window 0 holds token 5 but not 6: labelled [CLS]; window 1 holds both.
  assert (starts[0], ends[0]) == (0, 0)
  prefix = 1 + 1 + 1  # [CLS] where [SEP]
  assert (starts[1], ends[1]) == (5 - 4 + prefix, 6 - 4 + prefix)
  assert (starts[2], ends[2]) == (0, 0)
  o = feats.offsets[1]
  assert ctx[o[starts[1], 0]:o[ends[1], 1]] == "paris france"
  np.testing.assert_array_equal(feats.arrays["token_type_ids"][1],
                                [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
  assert (feats.offsets[:, :prefix] == -1).all() and (feats.offsets[:, -1] == -1).all()
  # Every context token has its maximum context in exactly one window.
  assert feats.is_max_context.sum() == 12


def test_chinese_answer_text_is_recovered_from_features(tmp_path, wordpiece):
  zh = "北京是中国的首都。台湾大学在台北。"
  f = S.read_qa_file(_squad([{"context": zh, "qas": [_qa("z", "首都在哪里", zh, "北京")]}],
                            tmp_path / "z.json"))
  feats = W.encode_qa_examples(f.examples, wordpiece, max_seq_length=16, max_query_length=5,
                               doc_stride=3, labels=True)
  hit = [i for i in range(len(feats)) if feats.arrays["start_positions"][i] > 0]
  assert hit
  for i in hit:
    s, e = feats.arrays["start_positions"][i], feats.arrays["end_positions"][i]
    assert zh[feats.offsets[i, s, 0]:feats.offsets[i, e, 1]] == "北京"


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_context_offsets_map_back_exactly_english_and_chinese(kind, wordpiece, sentencepiece):
  tok = wordpiece if kind == "wordpiece" else sentencepiece
  for text in ["  Paris  is the capital of FRANCE, Café ÜNI!", "北京是中国的首都。台湾大学在哪里？",
               "Paris是中国的首都 w1"]:
    (ids, spans), = tok.encode_with_offsets([text], trim_whitespace=True)
    offsets = np.asarray(spans).reshape(-1, 2)
    assert ids == tok.encode(text)
    assert (np.diff(offsets[:, 0]) >= 0).all() and (offsets[:, 1] >= offsets[:, 0]).all()
    pieces = [text[a:b] for a, b in offsets]
    # The spans, joined, are the text without its whitespace: nothing lost, nothing doubled.
    assert "".join(pieces) == "".join(text.split()), pieces
    if any("\u4e00" <= ch <= "\u9fff" for ch in text) and kind == "wordpiece":
      # WordPiece splits CJK characters: one character per token.
      cjk = [p for p in pieces if any("\u4e00" <= ch <= "\u9fff" for ch in p)]
      assert all(len(p) == 1 for p in cjk)
