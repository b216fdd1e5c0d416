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
from bert_jax.finetune import peft
from bert_jax.finetune import tasks as tasks_lib
from bert_jax.finetune.config import FinetuneConfig

BEST_MODEL_DIR = "best_model"
FINETUNE_META = "finetune.json"


def checkpoint_labels(directory: str) -> list[str] | None:
  """The label names of a fine-tuned checkpoint (config.json's id2label), if any."""
  with open(os.path.join(directory, interop.CONFIG_NAME)) as f:
    hf = json.load(f)
  id2label = hf.get("id2label")
  if not id2label or not any(a.replace("ModernBert", "Bert").startswith("BertFor")
                             and a not in ("BertForPreTraining", "ModernBertForMaskedLM")
                             for a in hf.get("architectures") or []):
    return None
  return [id2label[str(i)] for i in range(len(id2label))]


def model_options(directory: str) -> dict:
  """The task options a fine-tuned model directory of ours records (finetune.json's
  "options"; `FinetuneConfig.model_options`), {} for any other directory."""
  path = os.path.join(directory, FINETUNE_META)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    try:
      meta = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: invalid JSON ({e})") from e
  options = meta.get("options") if isinstance(meta, dict) else None
  return dict(options) if isinstance(options, dict) else {}


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
    # Plain BERT weights (LoRA arrives merged; BitFit is plain BERT); adapters and
    # prefixes go to their own files beside (bert_jax/finetune/peft).
    plain, extras = peft.split_extras(host)
    interop.save_hf(bert_config, plain, tmp)
    if extras:
      peft.save_extras(tmp, cfg.peft_method, bert_config, extras, task.hf_architecture)
    config_path = os.path.join(tmp, interop.CONFIG_NAME)
    with open(config_path) as f:
      hf = json.load(f)
    names = task.label_names(label_list)
    # A modern encoder exports as transformers' ModernBertFor<Task> of the same task.
    architecture = ("Modern" if hf.get("model_type") == "modernbert" else "") + task.hf_architecture
    hf.update(architectures=[architecture],
              id2label={str(i): n for i, n in enumerate(names)},
              label2id={n: i for i, n in enumerate(names)})
    if task.problem_type is not None:
      hf["problem_type"] = task.problem_type
    fileio.write_json_atomic(config_path, hf, indent=2, sort_keys=True)
    write_tokenizer(tmp)
    meta = dict(task=cfg.task, labels=list(label_list), max_seq_length=cfg.max_seq_length,
                **(text_meta or {}), peft=cfg.peft_method, lora_rank=cfg.effective_lora_rank,
                lora_alpha=cfg.lora_alpha, lora_merged=cfg.peft_method == "lora",
                options={**cfg.model_options(), "labels": list(label_list) or None,
                         "metric_for_best": cfg.best_metric})
    if extras:
      meta.update(adapter_size=bert_config.adapter_size, prefix_length=bert_config.prefix_length)
    fileio.write_json_atomic(os.path.join(tmp, FINETUNE_META), meta, indent=1)
