"""Multiple choice (SWAG, CLUE's C3 and CHID): N candidates per example, one score each.

Model: transformers' `BertForMultipleChoice` (the names `bert` with its pooler and
`classifier`, a Linear(hidden, 1)): the [B, N, L] inputs are flattened to [B*N, L],
each candidate's pooled [CLS] (after dropout) gets one score, and the scores come back
as [B, N] logits, softmaxed over the candidates by the loss and by `predict`.

Two things the fine-tuning loop needs beyond transformers' module:
  * the loop's arrays keep the token axis second ([B, L, N], `candidates_last`), so that
    its length buckets cut tokens, not candidates; the module transposes them back;
  * examples with fewer candidates than N (C3 has 2 to 4) carry all-padding candidate
    rows; their logits are set to -1e9 so that they never win and weigh nothing in the
    softmax. With every candidate real (as in the parity tests) the logits are exactly
    transformers'.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import model as model_lib
from bert_jax import partitioning
from bert_jax.finetune import metrics as finetune_metrics
from bert_jax.finetune.tasks import base

_MISSING = -1e9  # the logit of a padding candidate


class BertForMultipleChoice(nn.Module):
  """[B, N, L] inputs (or [B, L, N] with `candidates_last`; [B, L] is one candidate)
  -> [B, N] logits."""
  config: model_lib.BertConfig
  candidates_last: bool = False

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool = True):
    if input_ids.ndim == 2:  # model.init's dummy inputs: one candidate
      input_ids, token_type_ids, attention_mask = (
          x[:, None, :] for x in (input_ids, token_type_ids, attention_mask))
    elif self.candidates_last:
      input_ids, token_type_ids, attention_mask = (
          jnp.swapaxes(x, 1, 2) for x in (input_ids, token_type_ids, attention_mask))
    batch, num_choices, length = input_ids.shape
    flat = lambda x: x.reshape(batch * num_choices, length)  # noqa: E731
    _, pooled = model_lib.BertModel(self.config, name="bert")(
        flat(input_ids), flat(token_type_ids), flat(attention_mask), deterministic=deterministic)
    pooled = nn.Dropout(self.config.hidden_dropout_prob)(pooled, deterministic=deterministic)
    head = model_lib._dense(self.config, 1, partitioning.EMBED, partitioning.CLASSES,  # pylint: disable=protected-access
                            "classifier")
    logits = head(pooled)
    logits = logits.reshape(batch, num_choices)
    real = attention_mask[:, :, 0] > 0  # a candidate without [CLS] is padding
    return jnp.where(real, logits, jnp.asarray(_MISSING, logits.dtype))


class MultipleChoice(base.Task):
  name = "multiple_choice"
  hf_architecture = "BertForMultipleChoice"
  problem_type = None
  default_metric = "accuracy"
  metric_names = ("accuracy",)

  def num_outputs(self, num_labels: int) -> int:
    return 1  # one score per candidate

  def label_names(self, label_list):
    return ["LABEL_0"]  # transformers' name of the one output

  def head_matches(self, checkpoint_labels, label_list) -> bool:
    # The head has no label set: any checkpoint's `classifier` of shape (1, hidden) is it
    # (head_from_hf checks the shape).
    return True

  def model(self, config, num_labels):
    return BertForMultipleChoice(config, candidates_last=True)

  def loss(self, outputs, batch):
    """Cross-entropy over the candidates; `labels` [B] is the right candidate's index."""
    weights = batch["attention_mask"][:, 0, 0].astype(jnp.float32)  # padding rows: 0
    return base.weighted_cross_entropy(outputs, batch["labels"], weights)

  def predict(self, outputs):
    """Probabilities over the candidates [B, N]."""
    return jax.nn.softmax(outputs.astype(jnp.float32), -1)

  def score(self, references, predictions, label_list):
    """`references`: the right candidate's index [N]; `predictions`: [N, choices]."""
    correct = int((predictions.argmax(-1) == references).sum())
    accuracy = finetune_metrics.accuracy(references, predictions.argmax(-1))
    return {"accuracy": accuracy}, (f"{'metric':<10} value\n{'accuracy':<10} {accuracy:.4f} "
                                    f"({correct} of {len(references)})")
