"""The text side of a fine-tuning task: one small interface (see `__init__.py`).

The fine-tuning loop (`bert_jax.finetune.loop.run(config, text)`) is handed one of these by
the launcher (`make_text_task`); bert_jax never imports this package and sees it only as its
`TextSide` / `EncodedData` protocols (`bert_jax/finetune/config.py`).
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping

import numpy as np

from data_pipeline.text import hf_tokenizer
from data_pipeline.text import tokenizer as tokenizer_lib


@dataclasses.dataclass
class EncodedFile:
  """One file, read and encoded. `items` are the examples (one per prediction);
  `arrays` the model's input rows ([N, ...] each; `labels` when labelled);
  `alignment` whatever `decode` needs to map rows back to items (NER: per sentence,
  the positions of each word's first sub-token)."""
  path: str
  items: list
  arrays: dict[str, np.ndarray]
  alignment: Any = None

  @property
  def labelled(self) -> bool:
    return "labels" in self.arrays

  def __len__(self):
    return len(self.items)


class TextTask:
  """What the fine-tuning loop needs of a task, text side:

    load_tokenizer(directory) / export_tokenizer(tokenizer, directory, model_max_length)
    read(path, labelled)                     -> items (examples / sentences, with line numbers)
    label_list(train_items, given)           -> the label names, or None: ask the checkpoint
    encode(path, items, tokenizer, label_list, max_seq_length) -> EncodedFile
    references(encoded)                      -> what the model side's `Task.score` compares
    decode(encoded, row_outputs, label_list) -> per-example predictions (rows aggregated)
    write_predictions(stem, encoded, predictions, label_list) -> the file written
    meta()                                   -> the options read, for finetune.json

  The reading options are declared once, as `FinetuneConfig` fields tagged `text=True`
  (`bert_jax/finetune/config.py`); the launcher hands all of them over
  (`FinetuneConfig.text_options()`) and a task keeps the ones it names in `OPTIONS`, as
  attributes of `self.options`.
  """
  name: str
  OPTIONS: tuple[str, ...] = ()

  def __init__(self, **options):
    missing = [name for name in self.OPTIONS if name not in options]
    if missing:
      raise ValueError(f"task={self.name}: text options {missing} not given (pass "
                       "FinetuneConfig.text_options())")
    self.options = types.SimpleNamespace(**{name: options[name] for name in self.OPTIONS})

  def load_tokenizer(self, directory: str):
    return tokenizer_lib.load_tokenizer(directory)

  def export_tokenizer(self, tokenizer, directory: str, model_max_length: int) -> None:
    hf_tokenizer.export_tokenizer(tokenizer, directory, model_max_length=model_max_length)

  def meta(self) -> Mapping[str, Any]:
    return dict(vars(self.options))
