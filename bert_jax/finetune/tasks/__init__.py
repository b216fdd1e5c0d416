"""Fine-tuning tasks, model side: one module per task behind `base.Task`.

`get(name)` gives the task the command line names (`--task=classification`,
`regression`, `ner`, `qa`). The loop in `bert_jax/finetune/loop.py` names no task: it builds
`task.model(...)`, trains on `task.loss`, jits `task.predict` for evaluation, and
scores with `task.score` what the text side decoded.

How to add a task (e.g. extractive question answering):
  1. Model side, here: `bert_jax/finetune/tasks/question_answering.py` with a `base.Task`
     subclass: `model` (a Flax module returning, say, start/end logits [B, L] each),
     `loss` (its own label keys, e.g. start_positions / end_positions, weighting
     padding rows 0), `predict` (per feature row, any pytree of arrays),
     `score` (e.g. exact match / F1 over answer strings), `hf_architecture`
     ("BertForQuestionAnswering"), `head_name` ("qa_outputs"), `default_metric`,
     `metric_names`. Register an instance in `_TASKS` below.
  2. Text side, in the text package (its `finetune_text.py`: a class with
     `read`, `label_list`, `encode`, `references`, `decode`, `write_predictions`,
     `meta`; see `TextTask` there): reading the files, windows over the context
     (several feature rows per example; the encoded file keeps the row -> example
     map and the offsets), `decode` aggregating rows into per-example predictions
     (n-best post-processing), and its prediction files. Register it in
     `finetune_text.TEXT_TASKS` under the same name.
  3. The batch keys beyond `bert_jax.batch.INPUT_KEYS` are the task's own: the loop
     passes every array of the encoded file to `loss`.
The loop, the launcher (its flags come from `finetune_config.FinetuneConfig`) and the
export need no change.
"""
from __future__ import annotations

from bert_jax.finetune.tasks.base import Task
from bert_jax.finetune.tasks.classification import Classification
from bert_jax.finetune.tasks.multiple_choice import MultipleChoice
from bert_jax.finetune.tasks.question_answering import QuestionAnswering
from bert_jax.finetune.tasks.regression import Regression
from bert_jax.finetune.tasks.token_classification import TokenClassification

_TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Regression(),
                                               TokenClassification(), QuestionAnswering(),
                                               MultipleChoice())}
NAMES = tuple(_TASKS)


def get(name: str) -> Task:
  """The task registered as `name`; a ValueError naming the known ones otherwise."""
  if name not in _TASKS:
    raise ValueError(f"task={name!r}: expected one of {NAMES}")
  return _TASKS[name]


__all__ = ["Task", "NAMES", "get"]
