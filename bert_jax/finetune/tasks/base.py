"""The model side of a fine-tuning task: one small interface (see `__init__.py`)."""
from __future__ import annotations

import abc
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax

from bert_jax import model as model_lib
from bert_jax.distillation import losses as distill_losses

Batch = Mapping[str, jax.Array]


class Task(abc.ABC):
  """What the fine-tuning loop needs to know of a task, model side.

  The loop (`bert_jax.finetune.loop`) calls, in order: `model` (build), `loss` (train
  step), `predict` (eval step: device outputs per feature row), and, on the host, after
  the text side has turned row outputs into per-example predictions, `score`.
  Everything about text (reading files, encoding, aligning labels to tokens,
  aggregating rows into examples, prediction files) is the text side's
  (the text package's `finetune_text`), which `launch/finetune.py` hands to the loop.
  """
  name: str                         # the registry / command-line name
  hf_architecture: str              # transformers class an export declares
  problem_type: str | None = None   # config.json's problem_type, if transformers has one
  default_metric: str               # eval metric that picks the best epoch (higher is better)
  metric_names: tuple[str, ...]     # metrics allowed as metric_for_best
  head_name: str = "classifier"     # the head's parameter name (ours and transformers')
  per_token_outputs: bool = False   # predict() gives [B, L, ...] (padded back after buckets)
  # FinetuneConfig fields whose default differs for this task (e.g. QA's 384 tokens).
  defaults: Mapping[str, Any] = {}

  def num_outputs(self, num_labels: int) -> int:
    """Width of the head's output layer."""
    return num_labels

  def label_names(self, label_list: Sequence[str]) -> list[str]:
    """config.json's id2label names of an export."""
    return list(label_list)

  @abc.abstractmethod
  def model(self, config: model_lib.BertConfig, num_labels: int) -> nn.Module:
    """Flax module (input_ids, token_type_ids, attention_mask, deterministic) -> outputs."""

  @abc.abstractmethod
  def loss(self, outputs: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(mean float32 loss, number of scored items) of one batch. Padding rows (added to
    fill the last batch) have attention_mask 0 everywhere and must weigh nothing."""

  @abc.abstractmethod
  def predict(self, outputs: Any) -> Any:
    """Per-row predictions, on device (jitted): e.g. class probabilities [B, K]."""

  @abc.abstractmethod
  def score(self, references: Any, predictions: Any,
            label_list: Sequence[str]) -> tuple[dict[str, float], str]:
    """(metrics, report table) of per-example `predictions` against `references` (both
    as the text side gives them)."""

  def distill_loss(self, outputs: Any, teacher_outputs: Any, batch: Batch,
                   temperature: float) -> tuple[jax.Array, jax.Array]:
    """(mean float32 loss, number of scored items) of the student's `outputs` against a
    fine-tuned teacher's on the same batch (task distillation). Default: one logit
    vector per row, KL(teacher || student) at `temperature`, T^2-scaled."""
    weights = sequence_weights(batch)
    return (distill_losses.kl_divergence(outputs, teacher_outputs, temperature, weights),
            jax.numpy.sum(weights))

  def head_matches(self, checkpoint_labels: Sequence[str] | None,
                   label_list: Sequence[str]) -> bool:
    """Whether a fine-tuned checkpoint's head (its config.json labels, None if it
    declares none) is the head of this run, so that it is loaded, not re-initialised."""
    return checkpoint_labels == self.label_names(label_list)

  def head_from_hf(self, tensors: Mapping[str, np.ndarray], num_labels: int,
                   hidden: int) -> dict | None:
    """The head of a fine-tuned transformers checkpoint (its state dict), in our layout,
    or None when it has none of the right shape (a linear `head_name` layer)."""
    w, b = tensors.get(f"{self.head_name}.weight"), tensors.get(f"{self.head_name}.bias")
    want = self.num_outputs(num_labels)
    if w is None or b is None or w.shape != (want, hidden) or b.shape != (want,):
      return None
    return {self.head_name: {"kernel": np.ascontiguousarray(w.T), "bias": b}}


def sequence_weights(batch: Batch) -> jax.Array:
  """[B] float32: 1 for real rows, 0 for padding rows (which have no [CLS])."""
  return batch["attention_mask"][:, 0].astype(jax.numpy.float32)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array
                           ) -> tuple[jax.Array, jax.Array]:
  """(mean softmax cross-entropy over the entries with weight 1, their count): a task
  loss as `Task.loss` returns it. `labels` must be valid class ids where the weight is 0
  too (any id: those entries are left out)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jax.numpy.float32), labels)
  count = jax.numpy.sum(weights)
  return jax.numpy.sum(ce * weights) / jax.numpy.maximum(count, 1.0), count
