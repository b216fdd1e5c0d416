"""Sequence (pair) regression (STS-B): [CLS] pooled -> one value, squared error."""
from __future__ import annotations

import jax.numpy as jnp

from bert_jax.finetune import metrics as finetune_metrics
from bert_jax import model as model_lib
from bert_jax.distillation import losses as distill_losses
from bert_jax.finetune.tasks import base


class Regression(base.Task):
  name = "regression"
  hf_architecture = "BertForSequenceClassification"
  problem_type = "regression"
  default_metric = "pearson"
  metric_names = ("pearson", "spearman", "corr")

  def num_outputs(self, num_labels):
    return 1

  def label_names(self, label_list):
    return ["LABEL_0"]  # transformers' name of a single regression output

  def model(self, config, num_labels):
    return model_lib.BertForSequenceClassification(config, 1)

  def loss(self, outputs, batch):
    weights = base.sequence_weights(batch)
    se = jnp.square(outputs.astype(jnp.float32)[:, 0] - batch["labels"].astype(jnp.float32))
    count = jnp.sum(weights)
    return jnp.sum(se * weights) / jnp.maximum(count, 1.0), count

  def distill_loss(self, outputs, teacher_outputs, batch, temperature):
    """Squared error to the teacher's value (a regression has no temperature)."""
    weights = base.sequence_weights(batch)
    return (distill_losses.mean_squared_error(outputs[:, 0], teacher_outputs[:, 0], weights),
            jnp.sum(weights))

  def predict(self, outputs):
    """Values [B]."""
    return outputs.astype(jnp.float32)[:, 0]

  def score(self, references, predictions, label_list):
    return finetune_metrics.regression_metrics(references, predictions)
