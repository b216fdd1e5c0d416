"""Sequence (pair) classification: [CLS] pooled -> K classes, cross-entropy (GLUE)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from bert_jax.finetune import metrics as finetune_metrics
from bert_jax import model as model_lib
from bert_jax.finetune.tasks import base


class Classification(base.Task):
  name = "classification"
  hf_architecture = "BertForSequenceClassification"
  problem_type = "single_label_classification"
  default_metric = "accuracy"
  metric_names = ("accuracy", "f1", "f1_macro", "mcc")

  def model(self, config, num_labels):
    return model_lib.BertForSequenceClassification(config, num_labels)

  def loss(self, outputs, batch):
    return base.weighted_cross_entropy(outputs, batch["labels"], base.sequence_weights(batch))

  def predict(self, outputs):
    """Class probabilities [B, K]."""
    return jax.nn.softmax(outputs.astype(jnp.float32), -1)

  def score(self, references, predictions, label_list):
    """`references`: class ids [N]; `predictions`: probabilities [N, K]."""
    return finetune_metrics.classification_metrics(references, predictions.argmax(-1),
                                                   label_list)
