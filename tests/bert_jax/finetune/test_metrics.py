"""Evaluation metrics against hand-computed values (and scipy where it is installed)."""
import numpy as np
import pytest

from bert_jax.finetune import metrics as M


def test_classification_hand_computed():
  y_true = [0, 0, 1, 1, 1, 2]
  y_pred = [0, 1, 1, 1, 0, 2]
  assert M.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
  # Class 1: tp 2, predicted 3, support 3 -> P = R = F1 = 2/3.
  assert M.f1_binary(y_true, y_pred, positive=1) == pytest.approx(2 / 3)
  # Class 0: P 1/2, R 1/2, F1 1/2; class 1: 2/3; class 2: 1.
  assert M.f1_macro(y_true, y_pred, 3) == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
  # Gorodkin: c=4, s=6, t=[2,3,1], p=[2,3,1]: (24-14)/(36-14) = 10/22.
  assert M.matthews_corrcoef(y_true, y_pred, 3) == pytest.approx(10 / 22)
  cm = M.confusion_matrix(y_true, y_pred, 3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [1, 2, 0], [0, 0, 1]])


def test_binary_mcc_and_degenerate_cases():
  # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
  assert M.matthews_corrcoef([1, 1, 1, 0, 0], [1, 1, 0, 1, 0], 2) == pytest.approx(1 / 6)
  # All predictions one class: MCC is undefined and reported as 0, F1 of class 1 is 0.
  assert M.matthews_corrcoef([0, 1, 1], [0, 0, 0], 2) == 0.0
  assert M.f1_binary([0, 1, 1], [0, 0, 0]) == 0.0
  with pytest.raises(ValueError, match="differ in length"):
    M.accuracy([0, 1], [0])


def test_correlations():
  x = [1.0, 2.0, 3.0, 4.0, 5.0]
  assert M.pearson(x, [2.0, 4.0, 6.0, 8.0, 10.0]) == pytest.approx(1.0)
  assert M.pearson(x, [5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
  # Monotone but not linear: Spearman 1, Pearson below 1.
  assert M.spearman(x, np.exp(x)) == pytest.approx(1.0)
  assert M.pearson(x, np.exp(x)) < 0.95
  np.testing.assert_array_equal(M.rankdata([10, 20, 10, 30]), [1.5, 3, 1.5, 4])
  # Hand computed: x=[1,2,3], y=[1,3,2]: cov 0.5*... r = 0.5.
  assert M.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
  assert M.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_correlations_match_scipy():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  x = rng.normal(size=200)
  y = x + rng.normal(size=200)
  y[::7] = y[0]  # ties
  assert M.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
  assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
  np.testing.assert_allclose(M.rankdata(y), stats.rankdata(y))


def test_entities_follow_conlleval():
  tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "O", "B-MISC"]
  # I- after O starts an entity; I- of another type starts a new one; B- always does.
  assert M.entities(tags) == [("PER", 0, 1), ("LOC", 3, 4), ("LOC", 5, 5), ("ORG", 6, 6),
                              ("MISC", 8, 8)]
  assert M.entities(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]
  assert M.entities(["O", "O"]) == []


def test_entity_scores_hand_computed():
  true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
  pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "B-LOC"]]
  # True: PER(0,0-1) LOC(0,3) ORG(1,0) PER(1,2); predicted: PER(0,0-1) ORG(1,0) LOC(1,2).
  # Hits 2: precision 2/3, recall 2/4.
  scores = M.entity_scores(true, pred)
  assert scores["precision"] == pytest.approx(2 / 3)
  assert scores["recall"] == pytest.approx(0.5)
  assert scores["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
  assert scores["per_type"]["PER"] == dict(precision=1.0, recall=0.5, f1=pytest.approx(2 / 3),
                                           support=2)
  assert scores["per_type"]["LOC"]["precision"] == 0.0 and scores["per_type"]["LOC"]["support"] == 1
  # A partially matching span is no hit (exact match only).
  assert M.entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0


def test_report_tables():
  metrics, table = M.classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], ["neg", "pos"])
  assert metrics["accuracy"] == 0.75
  assert metrics["f1"] == pytest.approx(2 / 3)  # binary: F1 of class 1
  lines = table.splitlines()
  assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
  assert lines[1].split() == ["neg", "0.6667", "1.0000", "0.8000", "2"]
  assert lines[2].split() == ["pos", "1.0000", "0.5000", "0.6667", "2"]
  ner, ner_table = M.ner_metrics([["B-PER", "O"]], [["B-PER", "O"]])
  assert ner["f1"] == 1.0 and ner["token_accuracy"] == 1.0
  assert ner_table.splitlines()[-1].split()[:2] == ["micro", "avg"]
  reg, _ = M.regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.5])
  assert reg["pearson"] > 0.98 and reg["spearman"] == pytest.approx(1.0)
  assert reg["mse"] == pytest.approx(0.25 / 3)
