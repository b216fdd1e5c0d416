"""Multiple choice files: SWAG's CSV, C3's JSON and CHID's JSON lines (Chinese), encoding."""
import json

import pytest

from data_pipeline.finetune import readers as fd
from data_pipeline.finetune.tasks import multiple_choice as mc
from data_pipeline.text.tokenizer import load_tokenizer
from tests.helpers import cjk
from tests.helpers.multiple_choice import write_swag

C3 = [[["小明在北京学习中文。", "他每天早上去图书馆。"],
       [{"question": "小明在哪里学习？", "choice": ["在上海", "在北京", "在深圳"], "answer": "在北京"},
        {"question": "他什么时候去图书馆？", "choice": ["晚上", "每天早上"], "answer": "每天早上"}],
       "m1-1"],
      [["妈妈一边做饭一边听广播。"],
       [{"question": "妈妈在做什么？", "choice": ["做饭", "画画", "唱歌", "开会"], "answer": "做饭"}],
       "d2-7"]]


@pytest.fixture(scope="module")
def zh_tokenizer(tmp_path_factory):
  path = tmp_path_factory.mktemp("zh") / "vocab.txt"
  return load_tokenizer(cjk.bert_chinese_vocab(str(path), extra_chars="一石二鸟画蛇添足＿"))


def test_swag_reads_as_run_swag_builds_candidates(tmp_path):
  path = write_swag(tmp_path / "train.csv", [("the cat sat", "then it", ["ran", "slept",
                                                                          "ate", "sang"], 2)])
  (ex,) = mc.read_multiple_choice(path)
  assert ex.id == "100" and ex.label == 2 and ex.line == 2
  assert ex.first == ("the cat sat",) * 4
  assert ex.second == ("then it ran", "then it slept", "then it ate", "then it sang")
  test = write_swag(tmp_path / "test.csv", [("a", "b", ["c", "d", "e", "f"], 0)], labelled=False)
  assert mc.read_multiple_choice(test, labelled=False)[0].label is None
  with pytest.raises(fd.DataError, match="not SWAG's layout.*ending0"):
    (tmp_path / "bad.csv").write_text("sentence,label\nx,1\n")
    mc.read_multiple_choice(str(tmp_path / "bad.csv"))
  bad = write_swag(tmp_path / "bad2.csv", [("a", "b", ["c", "d", "e", "f"], 7)])
  with pytest.raises(fd.DataError, match=r"bad2.csv:2: label 7 is not one of the 4"):
    mc.read_multiple_choice(bad)


def test_c3_in_chinese_and_padding_candidates(tmp_path, zh_tokenizer):
  path = tmp_path / "d-dev.json"
  path.write_text(json.dumps(C3, ensure_ascii=False))
  examples = mc.read_multiple_choice(str(path))
  assert [e.id for e in examples] == ["m1-1-0", "m1-1-1", "d2-7-0"]
  assert [e.label for e in examples] == [1, 1, 0]
  assert examples[0].first[0] == "小明在北京学习中文。\n他每天早上去图书馆。"
  assert examples[0].second[1] == "小明在哪里学习？ 在北京"
  arrays = mc.encode_multiple_choice(examples, zh_tokenizer, 32)
  assert arrays["input_ids"].shape == (3, 32, 4)  # [examples, L, N]: N = the most choices
  # The second question has 2 choices: candidates 2 and 3 are padding (no [CLS]).
  assert arrays["attention_mask"][1, 0].tolist() == [1, 1, 0, 0]
  assert (arrays["input_ids"][1, :, 2] == zh_tokenizer.special_ids["pad_id"]).all()
  ids = arrays["input_ids"][2, :, 0]
  cls, sep = zh_tokenizer.special_ids["cls_id"], zh_tokenizer.special_ids["sep_id"]
  text = zh_tokenizer.encode("妈妈一边做饭一边听广播。")
  assert ids[0] == cls and ids[1:1 + len(text)].tolist() == text and ids[1 + len(text)] == sep
  assert arrays["token_type_ids"][2, 1 + len(text) + 1, 0] == 1
  assert arrays["labels"].tolist() == [1, 1, 0]
  C3[0][1][0]["answer"] = "在广州"
  path.write_text(json.dumps(C3, ensure_ascii=False))
  with pytest.raises(fd.DataError, match="answer '在广州' is not one of its choices"):
    mc.read_multiple_choice(str(path))
  C3[0][1][0]["answer"] = "在北京"


def test_chid_blanks_answers_and_window(tmp_path, zh_tokenizer):
  lines = [{"candidates": ["一石二鸟", "画蛇添足"],
            "content": "他这样做真是#idiom000001#，多此一举。后来他#idiom000002#了。"}]
  path = tmp_path / "dev.json"
  path.write_text("\n".join(json.dumps(l, ensure_ascii=False) for l in lines) + "\n")
  with pytest.raises(fd.DataError, match="dev_answer.json, which does not exist"):
    mc.read_multiple_choice(str(path))
  (tmp_path / "dev_answer.json").write_text(json.dumps({"#idiom000001#": 1, "#idiom000002#": 0}))
  examples = mc.read_multiple_choice(str(path))
  assert [(e.id, e.label) for e in examples] == [("#idiom000001#", 1), ("#idiom000002#", 0)]
  assert examples[0].first == ("一石二鸟", "画蛇添足")
  # The other blank is "＿"; the candidate is filled in where the blank was.
  assert mc._around_blank(examples[0].second[1], 100) == "他这样做真是画蛇添足，多此一举。后来他＿了。"
  cut = mc._around_blank(examples[1].second[0], 8)
  assert "一石二鸟" in cut and len(cut) <= 8
  arrays = mc.encode_multiple_choice(examples, zh_tokenizer, 24)
  assert arrays["input_ids"].shape == (2, 24, 2) and arrays["labels"].tolist() == [1, 0]
  # The test file has no answers: read unlabelled.
  (tmp_path / "test.json").write_text(path.read_text())
  assert all(e.label is None for e in mc.read_multiple_choice(str(tmp_path / "test.json"),
                                                              labelled=False))
