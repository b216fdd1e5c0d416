"""Extractive question answering (SQuAD v1.1 / v2.0, CMRC 2018, DRCD): the model side.

Head: `model.BertForQuestionAnswering` (transformers' names). Loss: run_squad.py's,
the mean of the start and the end cross-entropies over the window's positions
(position 0, [CLS], is the label of "not in this window" / "no answer").
Decoding and scoring: `qa_postprocess` and `qa_metrics`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def qa_loss(start_logits: jax.Array, end_logits: jax.Array, batch) -> tuple[jax.Array, jax.Array]:
  """(mean loss, number of windows) of one batch, float32.

  start_logits, end_logits: [B, L]; batch: start_positions, end_positions [B]
  int, attention_mask [B, L], optionally label_weights [B] (0: a window of a
  question whose answer did not verify). Padding rows (added to fill the last
  batch) have no [CLS] and weigh 0.
  """
  weights = batch["attention_mask"][:, 0].astype(jnp.float32)
  if "label_weights" in batch:
    weights = weights * batch["label_weights"].astype(jnp.float32)
  start = optax.softmax_cross_entropy_with_integer_labels(
      start_logits.astype(jnp.float32), batch["start_positions"])
  end = optax.softmax_cross_entropy_with_integer_labels(
      end_logits.astype(jnp.float32), batch["end_positions"])
  count = jnp.sum(weights)
  return jnp.sum(0.5 * (start + end) * weights) / jnp.maximum(count, 1.0), count
