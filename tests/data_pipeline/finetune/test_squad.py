"""QA files: SQuAD / CMRC / DRCD / JSONL reading, answer checks."""
import json

import numpy as np
import pytest

from data_pipeline.finetune import qa_windows as W
from data_pipeline.finetune import squad as S
from tests.helpers.data import qa_entry as _qa, squad_file as _squad


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
  feats = W.encode_qa_examples(f.examples, wordpiece, max_seq_length=32, max_query_length=8,
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
