"""QA data: SQuAD / CMRC / DRCD / JSONL reading, answer checks, run_squad windows, offsets."""
import json

import numpy as np
import pytest

from data_pipeline.finetune import squad as S
from data_pipeline.text import token_offsets
from data_pipeline.text.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_sentencepiece

WORDS = ["paris", "is", "the", "capital", "of", "france", "where", "what", "city", "who",
         "un", "##i", "##n", "cafe", "!", ",", "."] + [f"w{i}" for i in range(10)]
CJK = list("北京是中国的首都哪里台湾大学在")


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
  d = tmp_path_factory.mktemp("wp")
  (d / "vocab.txt").write_text("\n".join(list(SPECIAL_TOKENS) + WORDS + CJK) + "\n")
  return load_tokenizer(str(d / "vocab.txt"))


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
  text = (["Paris is the capital of France.", "Where is the capital city?",
           "北京是中国的首都。", "台湾大学在哪里？", "  two  spaces  Café ÜBER"] * 40)
  model = train_sentencepiece(iter(text), str(tmp_path_factory.mktemp("spm")), vocab_size=54)
  return load_tokenizer(model)


def _squad(paragraphs, path, version=None):
  root = {"data": [{"title": "t", "paragraphs": paragraphs}]}
  if version:
    root["version"] = version
  path.write_text(json.dumps(root, ensure_ascii=False))
  return str(path)


def _qa(qid, question, context, answer=None, **extra):
  answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
  return {"id": qid, "question": question, "answers": answers, **extra}


def test_reads_squad_v1_v2_chinese_and_jsonl(tmp_path):
  ctx = "Paris is the capital of France."
  v1 = _squad([{"context": ctx, "qas": [_qa("a", "What is the capital?", ctx, "Paris")]}],
              tmp_path / "v1.json")
  f = S.read_qa_file(v1)
  assert [(e.id, e.answers[0].text, e.answers[0].start, e.is_impossible) for e in f.examples] \
      == [("a", "Paris", 0, False)]
  # v2.0: an unanswerable question, with plausible answers that are not gold.
  qas = [_qa("a", "What is the capital?", ctx, "Paris"),
         {"id": "b", "question": "Who?", "answers": [], "is_impossible": True,
          "plausible_answers": [{"text": "France", "answer_start": 24}]}]
  v2 = _squad([{"context": ctx, "qas": qas}], tmp_path / "v2.json")
  with pytest.raises(S.QADataError, match=r"v2\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\]: "
                     r"question 'b' is marked is_impossible.*--version_2_with_negative"):
    S.read_qa_file(v2)
  f = S.read_qa_file(v2, version_2_with_negative=True)
  assert [(e.id, e.is_impossible, e.answers) for e in f.examples][1] == ("b", True, ())
  assert S.gold_answers(f) == {"a": ["Paris"], "b": []}
  # CMRC 2018 / DRCD: the same layout, Chinese contexts, string ids.
  zh = "北京是中国的首都。台湾大学在台北。"
  cmrc = _squad([{"id": "DEV_0", "context": zh, "qas": [
      _qa("DEV_0_QUERY_0", "中国的首都是哪里？", zh, "北京"),
      _qa("1001-1-1", "台湾大学在哪里？", zh, "台北")]}], tmp_path / "cmrc.json")
  f = S.read_qa_file(cmrc)
  assert [(e.id, e.verified[0].text) for e in f.examples] == [("DEV_0_QUERY_0", "北京"),
                                                              ("1001-1-1", "台北")]
  assert not f.bad_answers
  # JSONL in the datasets layout; unlabelled input needs no answers.
  lines = [{"id": "j1", "question": "Where?", "context": ctx,
            "answers": {"text": ["France"], "answer_start": [24]}},
           {"id": "j2", "question": "Who?", "context": ctx}]
  jl = tmp_path / "q.jsonl"
  jl.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  assert [e.id for e in S.read_qa_file(str(jl), labelled=False).examples] == ["j1", "j2"]
  with pytest.raises(S.QADataError, match=r"q\.jsonl:2: question 'j2' has no answers"):
    S.read_qa_file(str(jl))


def test_mismatched_answers_are_counted_reported_and_not_trained_on(tmp_path, wordpiece):
  ctx = "paris is the capital of france"
  qas = [{"id": "ok", "question": "where", "answers": [{"text": "paris", "answer_start": 0}]},
         {"id": "shifted", "question": "what", "answers": [
             {"text": "capital", "answer_start": 3}]},
         {"id": "outside", "question": "who", "answers": [
             {"text": "france", "answer_start": 99}]},
         {"id": "half", "question": "what city", "answers": [
             {"text": "nope", "answer_start": 0}, {"text": "france", "answer_start": 24}]}]
  f = S.read_qa_file(_squad([{"context": ctx, "qas": qas}], tmp_path / "t.json"))
  assert [qid for qid, _ in f.bad_answers] == ["shifted", "outside", "half"]
  assert "the context there reads 'is is t'" in f.bad_answers[0][1]
  assert "outside the context" in f.bad_answers[1][1]
  assert "3 answer(s) do not match" in f.report() and "shifted" in f.report()
  feats = S.encode_qa_examples(f.examples, wordpiece, max_seq_length=32, max_query_length=8,
                               labels=True)
  # Not trained on (weight 0), still encoded so that evaluation scores them.
  assert feats.skipped == ["shifted", "outside"]
  rows = [f.examples[i].id for i in feats.example_index]
  assert rows == ["ok", "shifted", "outside", "half"]
  np.testing.assert_array_equal(feats.arrays["label_weights"], [1, 0, 0, 1])
  # 'half' trains on its verified answer, 'france'.
  row = rows.index("half")
  start = feats.arrays["start_positions"][row]
  assert feats.arrays["input_ids"][row, start] == wordpiece.encode("france")[0]


@pytest.mark.parametrize("bad, message", [
    ('{"data": [', r"t\.json:1:11: invalid JSON"),
    ('{"data": [{"paragraphs": [{"context": "x y", "qas": [{"question": "q?", "answers": []}]}]}]}',
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: question without an id"),
    ('{"data": [{"paragraphs": [{"context": "  ", "qas": []}]}]}',
     r"data\[0\]\.paragraphs\[0\]: empty context"),
    ('{"data": [{"paragraphs": [{"context": "a b", "qas": [{"id": "x", "question": "q", '
     '"answers": [{"text": "a", "answer_start": 0}]}, {"id": "x", "question": "r", '
     '"answers": [{"text": "b", "answer_start": 2}]}]}]}]}',
     r"qas\[1\]: duplicate question id 'x' \(first at .*qas\[0\]\)"),
    ('{"version": "1.1"}', r"no 'data' list"),
])
def test_bad_files_name_file_and_place(tmp_path, bad, message):
  path = tmp_path / "t.json"
  path.write_text(bad)
  with pytest.raises(S.QADataError, match=message):
    S.read_qa_file(str(path))


def test_lengths_are_checked():
  S.check_lengths(384, 64, 128)
  with pytest.raises(ValueError, match=r"max_query_length=61 is too large for max_seq_length=64"):
    S.check_lengths(64, 61, 16)


def test_windows_follow_run_squad_stride():
  # doc_stride is the step between window starts (not transformers' overlap).
  assert S.window_starts(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
  assert S.window_starts(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
  assert S.window_starts(3, 4, 2) == [(0, 3)]
  assert S.window_starts(10, 4, 9) == [(0, 4), (4, 4), (8, 2)]  # never skips a token
  mask = S.max_context_mask([(0, 4), (2, 4)], 6)
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
  feats = S.encode_qa_examples(f.examples, wordpiece, max_seq_length=10, max_query_length=4,
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


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_offsets_map_back_exactly_english_and_chinese(kind, wordpiece, sentencepiece):
  tok = wordpiece if kind == "wordpiece" else sentencepiece
  for text in ["  Paris  is the capital of FRANCE, Café ÜNI!", "北京是中国的首都。台湾大学在哪里？",
               "Paris是中国的首都 w1"]:
    ids, offsets = token_offsets.encode_with_offsets(tok, text)
    assert ids == tok.encode(text)
    assert (np.diff(offsets[:, 0]) >= 0).all() and (offsets[:, 1] >= offsets[:, 0]).all()
    pieces = [text[a:b] for a, b in offsets]
    # The spans, joined, are the text without its whitespace: nothing lost, nothing doubled.
    assert "".join(pieces) == "".join(text.split()), pieces
    if any("\u4e00" <= ch <= "\u9fff" for ch in text) and kind == "wordpiece":
      # WordPiece splits CJK characters: one character per token.
      cjk = [p for p in pieces if any("\u4e00" <= ch <= "\u9fff" for ch in p)]
      assert all(len(p) == 1 for p in cjk)


def test_chinese_answer_text_is_recovered_from_features(tmp_path, wordpiece):
  zh = "北京是中国的首都。台湾大学在台北。"
  f = S.read_qa_file(_squad([{"context": zh, "qas": [_qa("z", "首都在哪里", zh, "北京")]}],
                            tmp_path / "z.json"))
  feats = S.encode_qa_examples(f.examples, wordpiece, max_seq_length=16, max_query_length=5,
                               doc_stride=3, labels=True)
  hit = [i for i in range(len(feats)) if feats.arrays["start_positions"][i] > 0]
  assert hit
  for i in hit:
    s, e = feats.arrays["start_positions"][i], feats.arrays["end_positions"][i]
    assert zh[feats.offsets[i, s, 0]:feats.offsets[i, e, 1]] == "北京"
