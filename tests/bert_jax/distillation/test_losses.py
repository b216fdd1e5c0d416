"""Distillation losses against hand computations in NumPy (temperature scaling included)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.distillation import losses


def _softmax(x, t=1.0):
  z = np.exp((x - x.max(-1, keepdims=True)) / t)
  return z / z.sum(-1, keepdims=True)


def test_soft_cross_entropy_and_kl_by_hand():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(3, 4, 7)), rng.normal(size=(3, 4, 7)) * 2
  w = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]], np.float32)
  for temp in (1.0, 2.0, 4.0):
    p_t, p_s = _softmax(t, temp), _softmax(s, temp)
    ce = -(p_t * np.log(p_s)).sum(-1)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)
    want_ce = temp ** 2 * (ce * w).sum() / w.sum()
    want_kl = temp ** 2 * (kl * w).sum() / w.sum()
    np.testing.assert_allclose(losses.soft_cross_entropy(s, t, temp, w), want_ce, rtol=1e-5)
    np.testing.assert_allclose(losses.kl_divergence(s, t, temp, w), want_kl, rtol=1e-4, atol=1e-6)
  # Same gradient for the student (they differ by the teacher's entropy).
  g_ce = jax.grad(lambda x: losses.soft_cross_entropy(x, t, 2.0, w))(jnp.asarray(s))
  g_kl = jax.grad(lambda x: losses.kl_divergence(x, t, 2.0, w))(jnp.asarray(s))
  np.testing.assert_allclose(g_ce, g_kl, atol=1e-6)
  # The teacher gets no gradient even if differentiated.
  g_teacher = jax.grad(lambda y: losses.kl_divergence(jnp.asarray(s), y, 2.0, w))(jnp.asarray(t))
  assert not np.any(np.asarray(g_teacher))


def test_kl_of_identical_distributions_is_zero():
  x = np.random.default_rng(1).normal(size=(5, 3))
  assert abs(float(losses.kl_divergence(x, x, 3.0))) < 1e-6


def test_mean_squared_error_by_hand():
  s, t = np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.0, 5.0])
  w = np.array([1.0, 1.0, 0.0])
  np.testing.assert_allclose(losses.mean_squared_error(s, t, w), (0.25 + 0.0) / 2, rtol=1e-6)
  s2, t2 = np.ones((2, 3, 2)), np.zeros((2, 3, 2))
  np.testing.assert_allclose(losses.mean_squared_error(s2, t2, np.ones((2, 3))), 2.0)


def test_hidden_cosine_by_hand_and_width_check():
  rng = np.random.default_rng(2)
  s, t = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 8))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  cos = (s * t).sum(-1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
  want = ((1 - cos) * mask).sum() / mask.sum()
  np.testing.assert_allclose(losses.hidden_cosine(s, t, mask), want, rtol=1e-5)
  with pytest.raises(ValueError, match="student hidden size 8, teacher 16"):
    losses.hidden_cosine(s, rng.normal(size=(2, 5, 16)), mask)


def _relation_kl_by_hand(student, teacher, mask, heads, rel):
  names = {"q": "query", "k": "key", "v": "value"}
  def probs(side):
    a, b = side[names[rel[0]]], side[names[rel[1]]]
    bsz, l, w = a.shape
    d = w // heads
    a, b = a.reshape(bsz, l, heads, d), b.reshape(bsz, l, heads, d)
    scores = np.einsum("bqrd,bkrd->brqk", a, b) / np.sqrt(d)
    scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
    return _softmax(scores)
  p_t, p_s = probs(teacher), probs(student)
  with np.errstate(divide="ignore", invalid="ignore"):
    kl = np.where(p_t > 0, p_t * (np.log(p_t) - np.log(p_s)), 0.0).sum(-1)   # [B, R, L]
  qm = np.broadcast_to(mask[:, None, :], kl.shape)
  return (kl * qm).sum() / qm.sum()


def test_minilm_relations_by_hand_across_widths():
  rng = np.random.default_rng(3)
  b, l = 2, 6
  student = {k: rng.normal(size=(b, l, 8)) for k in ("query", "key", "value")}
  teacher = {k: rng.normal(size=(b, l, 16)) for k in ("query", "key", "value")}
  mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.float32)
  for rels in (("qk",), ("vv",), ("qq", "kk", "vv")):
    want = sum(_relation_kl_by_hand(student, teacher, mask, 4, r) for r in rels)
    got = losses.attention_relation_kl(student, teacher, mask, 4, rels)
    np.testing.assert_allclose(got, want, rtol=1e-4)
  same = losses.attention_relation_kl(teacher, teacher, mask, 4)
  assert abs(float(same)) < 1e-5
  with pytest.raises(ValueError, match="relation 'qx'"):
    losses.attention_relation_kl(student, teacher, mask, 4, ("qx",))
  with pytest.raises(ValueError, match="not divisible by 3"):
    losses.attention_relation_kl(student, teacher, mask, 3)
