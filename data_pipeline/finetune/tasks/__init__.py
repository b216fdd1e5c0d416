"""Fine-tuning tasks, text side: one module per task behind `base.TextTask`, each named as
its model-side twin in `bert_jax/finetune/tasks/`.

`make_text_task(name, **options)` gives the text side of the task the command line names
(`--task=classification`, `regression`, `ner`, `qa`), reading files per `options`
(`FinetuneConfig.text_options()`: every reading option; each task keeps the ones its
`OPTIONS` name).

How to add a task, text side:
  1. `data_pipeline/finetune/tasks/<task>.py`, named as the model side's module, with a
     `base.TextTask` subclass: `name` (the model side's), `OPTIONS`, `read`, `label_list`,
     `encode`, `references`, `decode`, `write_predictions` (the interface is in base.py).
  2. Its options: `FinetuneConfig` fields tagged `text=True` (bert_jax/finetune/config.py);
     that field is the option's one declaration (flag, help, default); name it in `OPTIONS`.
  3. Register the class in `_TASKS` below.
"""
from __future__ import annotations

from data_pipeline.finetune.tasks.base import EncodedFile, TextTask
from data_pipeline.finetune.tasks.classification import ClassificationText
from data_pipeline.finetune.tasks.question_answering import QuestionAnsweringText
from data_pipeline.finetune.tasks.regression import RegressionText
from data_pipeline.finetune.tasks.token_classification import TokenClassificationText

_TASKS: dict[str, type[TextTask]] = {
    t.name: t for t in (ClassificationText, RegressionText, TokenClassificationText,
                        QuestionAnsweringText)}
NAMES = tuple(_TASKS)


def make_text_task(name: str, **options) -> TextTask:
  """The text side of task `name`, reading files per `options` (the text-tagged fields of
  FinetuneConfig; those the task does not read are ignored)."""
  if name not in _TASKS:
    raise ValueError(f"task={name!r}: no text side; known: {NAMES}")
  return _TASKS[name](**options)


__all__ = ["EncodedFile", "TextTask", "NAMES", "make_text_task"]
