"""General (pretraining-stage) distillation: the loss of one student step.

The student's hard losses (MLM, NSP) come from the pretraining loop's own
`pretraining_losses` sums; this module adds the soft terms of a frozen teacher run
on the same batch, each with its weight (`DistillSpec`, from `config.distill`):

  mlm_soft       T^2 * cross-entropy of the student's MLM distribution at the masked
                 positions against the teacher's, at temperature T (DistilBERT's L_ce)
  mlm_hard       the student's MLM cross-entropy against the true tokens (L_mlm)
  nsp_soft       the same soft cross-entropy on the NSP logits
  nsp_hard       the student's NSP cross-entropy
  hidden_cosine  1 - cos between last hidden states over real tokens (L_cos; equal widths)
  minilm         MiniLM's last-layer self-attention relation KL (any widths)

Each term is normalised by the *global* batch's count (predictions, instances or
tokens), so that gradient accumulation over micro-batches adds up to the same step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from bert_jax.distillation import losses

TERMS = ("mlm_soft", "mlm_hard", "nsp_soft", "nsp_hard", "hidden_cosine", "minilm")


@dataclasses.dataclass(frozen=True)
class DistillSpec:
  temperature: float = 2.0
  mlm_soft: float = 1.0
  mlm_hard: float = 1.0
  nsp_soft: float = 0.0
  nsp_hard: float = 1.0
  hidden_cosine: float = 0.0
  minilm: float = 0.0
  relation_heads: int = 0           # MiniLM relation heads; 0: the student's attention heads
  relations: tuple[str, ...] = ("qq", "kk", "vv")

  @property
  def wants_hidden(self) -> bool:
    return self.hidden_cosine > 0 or self.minilm > 0

  @property
  def wants_qkv(self) -> bool:
    return self.minilm > 0

  def validate(self, student_config, teacher_config) -> None:
    """Errors name the config.distill field."""
    if self.temperature <= 0:
      raise ValueError(f"config.distill.temperature={self.temperature}: must be > 0")
    negative = [t for t in TERMS if getattr(self, t) < 0]
    if negative:
      raise ValueError(f"config.distill weights must be >= 0: {negative}")
    if not any(getattr(self, t) > 0 for t in TERMS):
      raise ValueError("config.distill: every loss weight is 0; nothing would be learned")
    if student_config.vocab_size != teacher_config.vocab_size:
      raise ValueError(f"the teacher's vocabulary ({teacher_config.vocab_size} ids) differs "
                       f"from the student's ({student_config.vocab_size}): distillation "
                       "needs one tokenizer for both")
    if self.hidden_cosine > 0 and student_config.hidden_size != teacher_config.hidden_size:
      raise ValueError(
          f"config.distill.hidden_cosine={self.hidden_cosine} needs equal widths: student "
          f"hidden_size {student_config.hidden_size}, teacher {teacher_config.hidden_size} "
          "(use config.distill.minilm, which works across widths)")
    heads = self.relation_heads or student_config.num_attention_heads
    if self.minilm > 0 and (student_config.hidden_size % heads or
                            teacher_config.hidden_size % heads):
      raise ValueError(f"config.distill.relation_heads={heads} must divide both widths "
                       f"({student_config.hidden_size}, {teacher_config.hidden_size})")


def spec_from_config(distill_config: Mapping[str, Any]) -> DistillSpec:
  """The spec of `config.distill` (its `teacher`, `teacher_dtype`, `init_layers` are the
  loop's business)."""
  fields = {f.name for f in dataclasses.fields(DistillSpec)}
  values = {k: v for k, v in dict(distill_config).items() if k in fields}
  if isinstance(values.get("relations"), str):
    values["relations"] = tuple(r for r in values["relations"].split(",") if r)
  return DistillSpec(**values)


def soft_terms(student: tuple[Any, dict], teacher: tuple[Any, dict], batch: Mapping[str, Any],
               spec: DistillSpec, counts: Mapping[str, jax.Array],
               relation_heads: int) -> dict[str, jax.Array]:
  """The teacher terms of one (micro-)batch, each already divided by the global count.

  student, teacher: ((mlm_logits, nsp_logits), internals) as `internals.
  apply_with_internals` gives them (internals may be {} when not wanted); counts:
  the global batch's `predictions`, `instances` and `tokens`.
  """
  (s_mlm, s_nsp), s_int = student
  (t_mlm, t_nsp), t_int = teacher
  t = spec.temperature
  mlm_w = batch["masked_lm_weights"].astype(jnp.float32)
  nsp_w = batch.get("instance_weights")
  nsp_w = (jnp.ones(s_nsp.shape[:-1], jnp.float32) if nsp_w is None
           else nsp_w.astype(jnp.float32))
  tokens = batch["attention_mask"].astype(jnp.float32)

  def share(mean, weights, total):
    # mean over this micro-batch's items -> its share of the global mean
    return mean * jnp.sum(weights) / total

  out = {}
  if spec.mlm_soft > 0:
    out["mlm_soft"] = share(losses.soft_cross_entropy(s_mlm, t_mlm, t, mlm_w), mlm_w,
                            counts["predictions"])
  if spec.nsp_soft > 0:
    out["nsp_soft"] = share(losses.soft_cross_entropy(s_nsp, t_nsp, t, nsp_w), nsp_w,
                            counts["instances"])
  if spec.hidden_cosine > 0:
    out["hidden_cosine"] = share(losses.hidden_cosine(s_int["hidden"], t_int["hidden"], tokens),
                                 tokens, counts["tokens"])
  if spec.minilm > 0:
    out["minilm"] = share(losses.attention_relation_kl(s_int, t_int, tokens, relation_heads,
                                                       spec.relations), tokens, counts["tokens"])
  return out


def total_loss(hard: Mapping[str, jax.Array], soft: Mapping[str, jax.Array],
               spec: DistillSpec) -> jax.Array:
  """Weighted sum; `hard` holds the student's "mlm_hard" and "nsp_hard" global means."""
  terms = {**hard, **soft}
  return sum(getattr(spec, name) * terms[name] for name in TERMS
             if getattr(spec, name) > 0 and name in terms)
