"""Extractive question answering (SQuAD v1.1 / v2.0, CMRC 2018, DRCD): the model side.

Head: `model.BertForQuestionAnswering` (transformers' names: `qa_outputs`, a
Linear(H, 2), start then end logit per token). Loss: run_squad.py's, the mean
of the start and the end cross-entropies over the window's real positions
(padding left out, unlike run_squad / run_qa, whose loss then changes with the
padded width; position 0, [CLS], is the label of "not in this window" / "no
answer"). Rows are windows,
several per question; the text side turns their logits into answers (n-best
post-processing) and this side scores them with the official rules
(`qa_metrics`: SQuAD's EM / F1, v2.0's HasAns / NoAns and best thresholds, or
CMRC 2018's for Chinese).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bert_jax import model as model_lib
from bert_jax.distillation import losses as distill_losses
from bert_jax.finetune import qa_metrics
from bert_jax.finetune.tasks import base

_PADDING_LOGIT = -1e9  # as the text side's decode sets padding before the n-best search


def qa_loss(start_logits: jax.Array, end_logits: jax.Array, batch) -> tuple[jax.Array, jax.Array]:
  """(mean loss, number of windows) of one batch, float32.

  start_logits, end_logits: [B, L]; batch: start_positions, end_positions [B]
  int, attention_mask [B, L], optionally label_weights [B] (0: a window of a
  question whose answer did not verify). Padding rows (added to fill the last
  batch) have no [CLS] and weigh 0; padding positions are left out of the
  softmax, so a window's loss is the same at any padded width.
  """
  weights = base.sequence_weights(batch)
  if "label_weights" in batch:
    weights = weights * batch["label_weights"].astype(jnp.float32)
  # Padding is never an answer (post-processing never picks it), so it takes no part in
  # the softmax: otherwise the loss of a window would depend on how wide its batch is
  # padded (a length bucket's width) and the [PAD] embedding would be trained through the
  # padding's logits (transformers freezes that row: padding_idx).
  real = batch["attention_mask"] > 0
  start = optax.softmax_cross_entropy_with_integer_labels(
      jnp.where(real, start_logits.astype(jnp.float32), _PADDING_LOGIT), batch["start_positions"])
  end = optax.softmax_cross_entropy_with_integer_labels(
      jnp.where(real, end_logits.astype(jnp.float32), _PADDING_LOGIT), batch["end_positions"])
  count = jnp.sum(weights)
  return jnp.sum(0.5 * (start + end) * weights) / jnp.maximum(count, 1.0), count


def _table(metrics: dict[str, float], references) -> str:
  lines = [f"{'metric':<20} value"]
  lines += [f"{k:<20} {v:.4f}" if isinstance(v, float) else f"{k:<20} {v}"
            for k, v in metrics.items()]
  if getattr(references, "bad_answers", 0):
    lines.append(f"{'answers_not_verified':<20} {references.bad_answers} (answer_start does not "
                 "match the context; scored by text, not trained on)")
  return "\n".join(lines)


class QuestionAnswering(base.Task):
  name = "qa"
  hf_architecture = "BertForQuestionAnswering"
  problem_type = None
  default_metric = "f1"
  metric_names = ("f1", "exact", "best_f1", "best_exact", "HasAns_f1", "HasAns_exact",
                  "average")
  head_name = "qa_outputs"
  per_token_outputs = True  # start/end logits [B, L]
  # BERT's SQuAD recipe where it differs from the fine-tuning defaults.
  defaults = {"max_seq_length": 384, "num_epochs": 2}

  def num_outputs(self, num_labels: int) -> int:
    return 2  # start, end

  def label_names(self, label_list):
    # transformers' BertForQuestionAnswering config: num_labels=2, default names.
    return ["LABEL_0", "LABEL_1"]

  def head_matches(self, checkpoint_labels, label_list) -> bool:
    # A QA head has no labels (transformers does not even write id2label for it):
    # any checkpoint's qa_outputs of the right shape is this head.
    return True

  def model(self, config: model_lib.BertConfig, num_labels: int):
    return model_lib.BertForQuestionAnswering(config)

  def loss(self, outputs, batch):
    start, end = outputs
    return qa_loss(start, end, batch)

  def distill_loss(self, outputs, teacher_outputs, batch, temperature):
    """Mean of KL(teacher || student) on the start and on the end distributions, over
    the window's real tokens (padding gets no probability on either side)."""
    weights = base.sequence_weights(batch)
    real = batch["attention_mask"] > 0

    def kl(student, teacher):
      neg = jnp.float32(-1e9)  # finite at any temperature, unlike finfo.min / T
      return distill_losses.kl_divergence(
          jnp.where(real, student.astype(jnp.float32), neg),
          jnp.where(real, teacher.astype(jnp.float32), neg), temperature, weights)
    (s_start, s_end), (t_start, t_end) = outputs, teacher_outputs
    return 0.5 * (kl(s_start, t_start) + kl(s_end, t_end)), jnp.sum(weights)

  def predict(self, outputs) -> dict[str, jax.Array]:
    """Per window: start_logits, end_logits [B, L] float32."""
    start, end = outputs
    return {"start_logits": start.astype(jnp.float32), "end_logits": end.astype(jnp.float32)}

  def score(self, references: Any, predictions: Any, label_list) -> tuple[dict, str]:
    """`references`: gold texts per id (`golds`), the scoring family (`metric`:
    "squad" / "cmrc", returned as `qa_metric`), whether it is v2.0; `predictions`: answers per id
    (`predictions`) and v2.0 null odds (`null_odds`).

    SQuAD: exact / f1 (+ HasAns_* / NoAns_*) are what the official script gives
    predictions.json alone; with v2.0, best_exact / best_f1 and their thresholds
    are what it adds with --na-prob-file=null_odds.json.
    """
    golds, answers = references.golds, predictions.predictions
    metrics = qa_metrics.evaluate(references.metric, golds, answers)
    if references.metric == "squad" and references.version_2_with_negative:
      with_odds = qa_metrics.squad_evaluate(golds, answers, null_odds=predictions.null_odds)
      metrics.update({k: with_odds[k] for k in ("best_exact", "best_exact_thresh", "best_f1",
                                                "best_f1_thresh")})
    # Numbers as floats (counts as ints); the family's name ("cmrc" / "squad") passes through.
    metrics = {k: (v if isinstance(v, str) else
                   int(v) if k == "total" or k.endswith("_total") else float(v))
               for k, v in metrics.items()}
    return metrics, _table(metrics, references)
