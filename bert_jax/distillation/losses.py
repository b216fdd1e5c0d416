"""Knowledge-distillation losses: a student imitating a frozen teacher.

Every loss is a weighted mean over the items that count (masked-LM positions,
sequences, tokens), float32 whatever the compute dtype, and takes the teacher's
outputs as constants (`stop_gradient`), so a teacher run in the same jitted step
receives no gradient even if the caller forgets.

- `soft_cross_entropy` / `kl_divergence`: Hinton et al.'s soft targets at
  temperature T, scaled by T^2 so that their gradients keep the size of the hard
  loss's as T grows (DistilBERT's MLM loss; the task distillation loss). The two
  differ by the teacher's entropy, a constant for the student: same gradients.
- `hidden_cosine`: DistilBERT's cosine loss between last hidden states (needs equal
  widths): mean of 1 - cos over real tokens.
- `attention_relation_kl`: MiniLM (v2)'s self-attention relation transfer of the
  last layer: query-query, key-key and value-value relations, softmax(X X^T /
  sqrt(d)) per relation head, KL(teacher || student) averaged over relation heads
  and real query tokens. Teacher and student queries/keys/values are re-split into
  the same number of relation heads, so widths and head counts may differ.
  With `relations=("qk", "vv")` it is MiniLM v1's attention-distribution and
  value-relation transfer.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def _weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
  values = values.astype(jnp.float32)
  if weights is None:
    return jnp.mean(values)
  weights = jnp.broadcast_to(weights.astype(jnp.float32), values.shape)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def soft_cross_entropy(student_logits: jax.Array, teacher_logits: jax.Array,
                       temperature: float = 1.0, weights: jax.Array | None = None) -> jax.Array:
  """T^2 * mean over items of -sum_c p_teacher(c; T) log p_student(c; T).

  logits: [..., C] (classes last); weights: [...] (1 for an item that counts, 0
  for padding), or None for all.
  """
  t = jnp.float32(temperature)
  teacher = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t, -1)
  log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, -1)
  return t * t * _weighted_mean(-jnp.sum(teacher * log_student, -1), weights)


def kl_divergence(student_logits: jax.Array, teacher_logits: jax.Array,
                  temperature: float = 1.0, weights: jax.Array | None = None) -> jax.Array:
  """T^2 * mean over items of KL(p_teacher(T) || p_student(T)); shapes as above."""
  t = jnp.float32(temperature)
  log_teacher = jax.nn.log_softmax(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t, -1)
  log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, -1)
  kl = jnp.sum(jnp.exp(log_teacher) * (log_teacher - log_student), -1)
  return t * t * _weighted_mean(kl, weights)


def mean_squared_error(student: jax.Array, teacher: jax.Array,
                       weights: jax.Array | None = None) -> jax.Array:
  """Mean over items of the squared difference (regression's distillation loss);
  student, teacher: [...] or [..., K] (summed over K)."""
  diff = student.astype(jnp.float32) - jax.lax.stop_gradient(teacher).astype(jnp.float32)
  sq = diff * diff
  if weights is not None and sq.ndim > weights.ndim:
    sq = jnp.sum(sq, axis=tuple(range(weights.ndim, sq.ndim)))
  return _weighted_mean(sq, weights)


def hidden_cosine(student_hidden: jax.Array, teacher_hidden: jax.Array,
                  mask: jax.Array) -> jax.Array:
  """DistilBERT's cosine loss: mean over real tokens of 1 - cos(student, teacher).

  hidden: [B, L, H] each (equal H); mask: [B, L], 1 for real tokens.
  """
  if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
    raise ValueError(f"the hidden-state cosine loss needs equal widths: student hidden size "
                     f"{student_hidden.shape[-1]}, teacher {teacher_hidden.shape[-1]}")
  s = student_hidden.astype(jnp.float32)
  t = jax.lax.stop_gradient(teacher_hidden).astype(jnp.float32)
  eps = jnp.float32(1e-8)
  cos = jnp.sum(s * t, -1) / jnp.maximum(
      jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1), eps)
  return _weighted_mean(1.0 - cos, mask)


def _relation_log_probs(a: jax.Array, b: jax.Array, key_mask: jax.Array,
                        num_heads: int) -> jax.Array:
  """log softmax(A_h B_h^T / sqrt(d_h)) per relation head: a, b [B, L, W] -> [B, R, L, L];
  keys where `key_mask` is 0 get no probability."""
  bsz, length, width = a.shape
  if width % num_heads:
    raise ValueError(f"width {width} is not divisible by {num_heads} relation heads")
  d = width // num_heads
  ah = a.astype(jnp.float32).reshape(bsz, length, num_heads, d)
  bh = b.astype(jnp.float32).reshape(bsz, length, num_heads, d)
  scores = jnp.einsum("bqrd,bkrd->brqk", ah, bh) / jnp.sqrt(jnp.float32(d))
  scores = jnp.where(key_mask[:, None, None, :] > 0, scores, jnp.finfo(jnp.float32).min)
  return jax.nn.log_softmax(scores, -1)


def attention_relation_kl(student: dict[str, jax.Array], teacher: dict[str, jax.Array],
                          mask: jax.Array, num_relation_heads: int,
                          relations: Sequence[str] = ("qq", "kk", "vv")) -> jax.Array:
  """MiniLM relation transfer of one layer, summed over `relations`.

  student, teacher: {"query", "key", "value"} -> [B, L, W] (heads merged; W may
  differ between the two); mask: [B, L] 1 for real tokens (padding is neither
  attended to nor scored). A relation "qk" is the attention distribution itself
  (softmax(Q K^T)); "qq", "kk", "vv" are MiniLMv2's self-relations.
  """
  names = {"q": "query", "k": "key", "v": "value"}
  total = jnp.float32(0.0)
  for rel in relations:
    if len(rel) != 2 or rel[0] not in names or rel[1] not in names:
      raise ValueError(f"relation {rel!r}: expected two of q, k, v (e.g. 'qk', 'vv')")
    first, second = names[rel[0]], names[rel[1]]
    log_t = _relation_log_probs(jax.lax.stop_gradient(teacher[first]),
                                jax.lax.stop_gradient(teacher[second]), mask, num_relation_heads)
    log_s = _relation_log_probs(student[first], student[second], mask, num_relation_heads)
    kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), -1)            # [B, R, L]
    query_mask = jnp.broadcast_to(mask[:, None, :], kl.shape)
    total = total + _weighted_mean(kl, query_mask)
  return total
