"""Fine-tuning tasks, model side: one module per task behind `base.Task`.

`get(name)` gives the task the command line names (`--task=classification`,
`regression`, `ner`, `qa`). The loop in `bert_jax/finetune/loop.py` names no task: it builds
`task.model(...)`, trains on `task.loss`, jits `task.predict` for evaluation, and
scores with `task.score` what the text side decoded.

How to add a task:
  1. Model side, here: `bert_jax/finetune/tasks/<task>.py` with a `base.Task` subclass:
     `model` (a Flax module over the encoder, returning the task's logits), `loss`
     (over the task's own label keys, weighting padding rows 0), `predict` (per
     feature row, any pytree of arrays), `score` (the task's metrics over what the
     text side decoded), `hf_architecture` and `head_name` (the transformers class and
     head the export names), `default_metric`, `metric_names`, and `defaults` for
     options such as max_seq_length. Register an instance in `_TASKS` below.
  2. Text side, in the text package's `finetune/tasks/<task>.py` (the same name): a
     `TextTask` subclass (`read`, `label_list`, `encode`, `references`, `decode`,
     `write_predictions`, `meta`; the protocol is `bert_jax.finetune.config.TextSide`)
     registered under the same name in the text package's registry. Several feature
     rows per example (as QA's windows) are the text side's business: its encoded
     file keeps the row -> example map that `decode` uses.
  3. The batch keys beyond `bert_jax.batch.INPUT_KEYS` are the task's own: the loop
     passes every array of the encoded file to `loss`. Options only the task reads
     are `FinetuneConfig` fields (see `config.py`).
The loop, the launcher (its flags come from `FinetuneConfig`) and the export need no
change.
"""
from __future__ import annotations

from bert_jax.finetune.tasks.base import Task
from bert_jax.finetune.tasks.classification import Classification
from bert_jax.finetune.tasks.question_answering import QuestionAnswering
from bert_jax.finetune.tasks.regression import Regression
from bert_jax.finetune.tasks.token_classification import TokenClassification

_TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Regression(),
                                               TokenClassification(), QuestionAnswering())}
NAMES = tuple(_TASKS)


def get(name: str) -> Task:
  """The task registered as `name`; a ValueError naming the known ones otherwise."""
  if name not in _TASKS:
    raise ValueError(f"task={name!r}: expected one of {NAMES}")
  return _TASKS[name]


__all__ = ["Task", "NAMES", "get"]
