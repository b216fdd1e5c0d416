"""Official SQuAD v1.1 / v2.0 and CMRC 2018 scores on hand-worked cases."""
import pytest

from bert_jax.finetune import qa_metrics as M


def test_squad_normalisation_and_single_scores():
  assert M.normalize_answer("The  Quick, brown-fox!") == "quick brownfox"
  assert M.normalize_answer("An apple a day") == "apple day"
  assert M.exact_match("Paris", "paris.") == 1.0
  assert M.exact_match("the Paris", "Paris!") == 1.0
  assert M.exact_match("Paris", "Paris France") == 0.0
  # gold [cat, sat], prediction [cat, sat, down]: P 2/3, R 1 -> F1 0.8.
  assert M.f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
  # Repeated tokens count as a multiset: gold [x, x, y], prediction [x]: P 1, R 1/3.
  assert M.f1_score("x x y", "x") == pytest.approx(0.5)
  assert M.f1_score("Paris", "London") == 0.0
  # The empty answer: only the empty prediction matches it.
  assert M.f1_score("", "") == 1.0 and M.exact_match("", "") == 1.0
  assert M.f1_score("", "Paris") == 0.0 and M.f1_score("Paris", "") == 0.0
  # An answer that normalises to nothing ("the") is no gold answer at all.
  assert M.gold_texts(["the", "Paris"]) == ["Paris"] and M.gold_texts(["a"]) == [""]


def test_squad_v1_max_over_gold_answers():
  golds = {"q1": ["Denver Broncos", "the Denver Broncos"], "q2": ["Santa Clara, California",
                                                                  "Levi's Stadium"]}
  preds = {"q1": "Denver Broncos", "q2": "Levi's Stadium in Santa Clara"}
  out = M.squad_evaluate(golds, preds)
  # q2: vs "levis stadium": P 2/5, R 1 -> 4/7; vs "santa clara california": P 2/5, R 2/3 -> 1/2.
  assert out["exact"] == pytest.approx(50.0)
  assert out["f1"] == pytest.approx(100 * (1 + 4 / 7) / 2)
  assert out["total"] == 2 and "NoAns_total" not in out
  with pytest.raises(ValueError, match=r"no prediction for 1 of 2 questions \(first: 'q2'\)"):
    M.squad_evaluate(golds, {"q1": "x"})


def test_squad_v2_breakdowns_null_odds_and_best_thresholds():
  golds = {"a": ["Paris", "the Paris"], "b": [], "c": ["red fox"]}
  preds = {"a": "paris", "b": "", "c": "fox"}
  out = M.squad_evaluate(golds, preds)
  assert out["exact"] == pytest.approx(200 / 3)
  assert out["f1"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)
  assert (out["HasAns_exact"], out["HasAns_total"]) == (pytest.approx(50.0), 2)
  assert out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
  assert (out["NoAns_exact"], out["NoAns_f1"], out["NoAns_total"]) == (100.0, 100.0, 1)
  assert "best_f1" not in out

  # With null odds: above the script's default threshold (1.0) a question is
  # answered "no answer" (c: 1.5 -> wrong); the sweep over thresholds in
  # increasing odds finds a(-2): +1, c(1.5): +2/3, b(3): +0.
  out = M.squad_evaluate(golds, preds, null_odds={"a": -2.0, "b": 3.0, "c": 1.5})
  assert out["f1"] == pytest.approx(200 / 3) and out["exact"] == pytest.approx(200 / 3)
  assert out["best_exact"] == pytest.approx(200 / 3) and out["best_exact_thresh"] == -2.0
  assert out["best_f1"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)
  assert out["best_f1_thresh"] == 1.5
  # An answer given to an unanswerable question costs one point in the sweep.
  out = M.squad_evaluate({"a": ["x"], "b": []}, {"a": "x", "b": "y"},
                         null_odds={"a": 0.0, "b": 5.0})
  assert out["NoAns_exact"] == 100.0  # b's odds 5 > 1: counted as "no answer"
  assert (out["best_exact"], out["best_exact_thresh"]) == (100.0, 0.0)


def test_cmrc_segmentation_and_scores():
  assert M.cmrc_segments("北京2008年奥运会，Beijing!") == [
      "北", "京", "2008", "年", "奥", "运", "会", "，", "beijing", "!"]
  assert M.cmrc_segments("北京，2008。", remove_punctuation=True) == ["北", "京", "2008"]
  # Longest common CONTIGUOUS run: "天安门" (3 of 5 on each side) -> F1 0.6.
  assert M.cmrc_f1("北京天安门", "天安门广场") == pytest.approx(0.6)
  # gold 甲乙丙丁, prediction 甲丙丁: the run is 丙丁 (2), not the subsequence 甲丙丁.
  assert M.cmrc_f1("甲乙丙丁", "甲丙丁") == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
  assert M.cmrc_f1("北京", "") == 0.0 and M.cmrc_exact("北京", "") == 0.0
  assert M.cmrc_exact("北京。", "「北京」") == 1.0 and M.cmrc_exact("北京", "南京") == 0.0
  out = M.cmrc_evaluate({"q1": ["北京", "北京市"], "q2": ["天安门"], "q3": ["上海"]},
                        {"q1": "北京市", "q2": "天安门广场"})
  # q1 exact; q2 F1 2*(3/5*1)/(3/5+1) = 0.75; q3 missing: 0.
  assert out["exact"] == pytest.approx(100 / 3)
  assert out["f1"] == pytest.approx(100 * (1 + 0.75) / 3)
  assert out["average"] == pytest.approx((out["exact"] + out["f1"]) / 2)
  # An unanswerable question: only "" is right.
  assert M.cmrc_evaluate({"q": []}, {"q": ""})["f1"] == 100.0
  assert M.cmrc_evaluate({"q": []}, {"q": "北京"})["exact"] == 0.0
