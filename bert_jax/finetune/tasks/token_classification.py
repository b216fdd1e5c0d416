"""Token classification (NER, CoNLL-2003): a tag per token, scored per entity (seqeval)."""
from __future__ import annotations

import jax.numpy as jnp

from bert_jax import batch as batch_lib
from bert_jax.finetune import metrics as finetune_metrics
from bert_jax import model as model_lib
from bert_jax.distillation import losses as distill_losses
from bert_jax.finetune.tasks import base


class TokenClassification(base.Task):
  name = "ner"
  hf_architecture = "BertForTokenClassification"
  problem_type = None
  default_metric = "f1"
  metric_names = ("f1", "precision", "recall", "token_accuracy")
  per_token_outputs = True

  def model(self, config, num_labels):
    return model_lib.BertForTokenClassification(config, num_labels)

  def loss(self, outputs, batch):
    """Scores the tokens whose label is not IGNORE_INDEX (a word's first sub-token)."""
    labels = batch["labels"]
    valid = labels != batch_lib.IGNORE_INDEX
    return base.weighted_cross_entropy(outputs, jnp.where(valid, labels, 0),
                                       valid.astype(jnp.float32))

  def distill_loss(self, outputs, teacher_outputs, batch, temperature):
    """KL per token, over the tokens that carry a tag (a word's first sub-token) when
    the batch is labelled, else over every real token (unlabelled distillation rows)."""
    if "labels" in batch:
      weights = (batch["labels"] != batch_lib.IGNORE_INDEX).astype(jnp.float32)
    else:
      weights = batch["attention_mask"].astype(jnp.float32)
    return (distill_losses.kl_divergence(outputs, teacher_outputs, temperature, weights),
            jnp.sum(weights))

  def predict(self, outputs):
    """Tag ids [B, L]."""
    return jnp.argmax(outputs.astype(jnp.float32), -1).astype(jnp.int32)

  def score(self, references, predictions, label_list):
    """`references` and `predictions`: per sentence, one tag string per word."""
    return finetune_metrics.ner_metrics(references, predictions)
