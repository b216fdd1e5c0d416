"""Each task's distillation loss against a hand computation (temperature included)."""
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax.finetune import tasks


def _softmax(x, t):
  z = np.exp((x - x.max(-1, keepdims=True)) / t)
  return z / z.sum(-1, keepdims=True)


def _kl(s, t, temp):
  p, q = _softmax(t, temp), _softmax(s, temp)
  return temp ** 2 * (p * (np.log(p) - np.log(q))).sum(-1)


def _batch(rows=3, length=5):
  mask = np.ones((rows, length), np.int32)
  mask[1, 3:] = 0
  mask[2] = 0                       # a padding row (fills the last batch): weighs nothing
  return {"attention_mask": mask}


def test_classification_and_regression():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  loss, count = tasks.get("classification").distill_loss(s, t, _batch(), 3.0)
  assert float(count) == 2
  np.testing.assert_allclose(loss, _kl(s, t, 3.0)[:2].mean(), rtol=1e-5)
  s1, t1 = rng.normal(size=(3, 1)), rng.normal(size=(3, 1))
  loss, _ = tasks.get("regression").distill_loss(s1, t1, _batch(), 3.0)
  np.testing.assert_allclose(loss, ((s1 - t1)[:2, 0] ** 2).mean(), rtol=1e-5)


def test_ner_scores_tagged_tokens_or_every_real_token():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(3, 5, 3)), rng.normal(size=(3, 5, 3))
  batch = _batch()
  ner = tasks.get("ner")
  loss, count = ner.distill_loss(s, t, batch, 2.0)
  w = batch["attention_mask"].astype(float)
  assert float(count) == w.sum()
  np.testing.assert_allclose(loss, (_kl(s, t, 2.0) * w).sum() / w.sum(), rtol=1e-5)
  labels = np.full((3, 5), batch_lib.IGNORE_INDEX, np.int32)
  labels[0, 1], labels[1, 2] = 1, 0
  loss, count = ner.distill_loss(s, t, {**batch, "labels": labels}, 2.0)
  assert float(count) == 2
  np.testing.assert_allclose(loss, (_kl(s, t, 2.0)[0, 1] + _kl(s, t, 2.0)[1, 2]) / 2, rtol=1e-5)


def test_qa_start_and_end_over_real_tokens():
  rng = np.random.default_rng(2)
  s = (rng.normal(size=(3, 5)), rng.normal(size=(3, 5)))
  t = (rng.normal(size=(3, 5)), rng.normal(size=(3, 5)))
  batch = _batch()
  for temp in (0.5, 1.0, 2.0):
    loss, count = tasks.get("qa").distill_loss(s, t, batch, temp)
    assert float(count) == 2
    want = []
    for row in (0, 1):
      n = batch["attention_mask"][row].sum()
      want.append(0.5 * (_kl(s[0][row, :n], t[0][row, :n], temp) +
                         _kl(s[1][row, :n], t[1][row, :n], temp)))
    np.testing.assert_allclose(loss, np.mean(want), rtol=1e-4)
