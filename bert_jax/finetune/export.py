"""Fine-tuned models as transformers directories: writing them, and reading back the
label set of one we wrote.

`save_model` builds the directory beside its place and renames it in, so a crash
never leaves a half-written model where a finished one was expected.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import jax
import numpy as np

from bert_jax import fileio
from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax.finetune import tasks as tasks_lib
from bert_jax.finetune.config import FinetuneConfig

BEST_MODEL_DIR = "best_model"
FINETUNE_META = "finetune.json"


def checkpoint_labels(directory: str) -> list[str] | None:
  """The label names of a fine-tuned checkpoint (config.json's id2label), if any."""
  with open(os.path.join(directory, interop.CONFIG_NAME)) as f:
    hf = json.load(f)
  id2label = hf.get("id2label")
  if not id2label or not any(a.startswith("BertFor") and a != "BertForPreTraining"
                             for a in hf.get("architectures") or []):
    return None
  return [id2label[str(i)] for i in range(len(id2label))]


def _to_host(tree):
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  def one(x):
    if x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(one, tree)


def save_model(directory: str, cfg: FinetuneConfig, bert_config: model_lib.BertConfig,
               params, label_list: Sequence[str], write_tokenizer: Callable[[str], None],
               text_meta: dict | None = None) -> None:
  """A transformers directory for the task model; built beside `directory`, then
  renamed over it, so a crash never leaves a half-written model in its place.
  `write_tokenizer(dir)` writes the tokenizer files (the text side's export)."""
  task = tasks_lib.get(cfg.task)
  host = _to_host(params)  # every process joins the gather; process 0 writes
  if jax.process_index() != 0:
    return
  with fileio.atomic_directory(directory) as tmp:
    interop.save_hf(bert_config, host, tmp)
    config_path = os.path.join(tmp, interop.CONFIG_NAME)
    with open(config_path) as f:
      hf = json.load(f)
    names = task.label_names(label_list)
    hf.update(architectures=[task.hf_architecture],
              id2label={str(i): n for i, n in enumerate(names)},
              label2id={n: i for i, n in enumerate(names)})
    if task.problem_type is not None:
      hf["problem_type"] = task.problem_type
    fileio.write_json_atomic(config_path, hf, indent=2, sort_keys=True)
    write_tokenizer(tmp)
    meta = dict(task=cfg.task, labels=list(label_list), max_seq_length=cfg.max_seq_length,
                **(text_meta or {}), lora_rank=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha, lora_merged=cfg.lora_rank > 0)
    fileio.write_json_atomic(os.path.join(tmp, FINETUNE_META), meta, indent=1)
