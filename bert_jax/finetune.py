"""Fine-tuning: sequence classification, regression and token classification (NER).

`run(FinetuneConfig)` loads a Hugging Face BERT directory (`interop.load_hf`: the
encoder, and the pooler when present; the task head starts fresh unless the
directory is one of our fine-tuned exports with the same labels), trains with
BERT's fine-tuning recipe (AdamW from `optim`, linear warmup over 10% of the steps
then linear decay, batch 32, 3 epochs, clipping at 1.0) data-parallel on the
`data, fsdp, tensor` mesh, evaluates after every epoch and keeps the best model.

What is trained: everything (full fine-tuning), or with `lora_rank > 0` LoRA
adapters on the attention query and value projections plus whatever the
checkpoint did not provide (the task head; the pooler of an encoder-only
checkpoint). The rest is frozen: passed to the step as a separate argument, never
differentiated, without optimizer state, so it stays bit-identical.

Outputs in `output_dir` (only process 0 writes):
  best_model/           the best epoch's model as a transformers directory: config.json
                        (with id2label and the task's architecture), model.safetensors
                        (LoRA merged into the kernels), tokenizer files, finetune.json.
                        Written beside and renamed into place: never half-written.
  eval_results.json     the best epoch's eval metrics, per-epoch history, parameter counts;
                        written last, so its presence means the run finished.
  eval_report.txt       the per-class (per-entity-type) table of the best epoch.
  eval_predictions.*    the best model's predictions on the eval file.
  predictions.*         with `predict_file`: its predicted labels.
(`.jsonl` for classification / regression, CoNLL `.conll` for NER.)

The text side (reading files, tokenizing) comes from `data_pipeline`, imported
inside the functions that need it: `import bert_jax.finetune` works without the
text tooling, as `train.py` does for the pretraining loader.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import time
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import bucketing
from bert_jax import eval_metrics
from bert_jax import interop
from bert_jax import lora
from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import partitioning

TASKS = ("classification", "regression", "ner")
# The fine-tuning batch contract's label for "no loss here" (non-first sub-tokens,
# specials, padding); the same value as data_pipeline.finetune_data.IGNORE_INDEX.
IGNORE_INDEX = -100
DEFAULT_BEST_METRIC = {"classification": "accuracy", "regression": "pearson", "ner": "f1"}
BEST_MODEL_DIR = "best_model"
FINETUNE_META = "finetune.json"
_ARCHITECTURES = {"classification": "BertForSequenceClassification",
                  "regression": "BertForSequenceClassification",
                  "ner": "BertForTokenClassification"}


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """One fine-tuning run. Defaults are BERT's fine-tuning recipe."""
  task: str
  init_from: str                       # a Hugging Face BERT directory
  output_dir: str
  train_file: str | None = None        # None: evaluate / predict with init_from's head
  eval_file: str | None = None
  predict_file: str | None = None
  text_column: str = "sentence"        # CSV/TSV/JSONL columns (classification, regression)
  text_pair_column: str | None = None
  label_column: str = "label"
  tokens_key: str = "tokens"           # JSONL keys for NER
  tags_key: str = "tags"
  labels: tuple[str, ...] | None = None  # the label set; default: those of the train file
  max_seq_length: int = 128
  batch_size: int = 32
  eval_batch_size: int = 64
  learning_rate: float = 3e-5
  num_epochs: int = 3
  warmup_fraction: float = 0.1
  weight_decay: float = 0.01
  grad_clip_norm: float = 1.0
  lora_rank: int = 0                   # 0: full fine-tuning
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = lora.DEFAULT_TARGETS
  metric_for_best: str | None = None   # default per task: DEFAULT_BEST_METRIC (higher is better)
  mesh_shape: tuple[int, int, int] = (-1, 1, 1)  # data, fsdp, tensor: all devices data-parallel
  dtype: str = "float32"
  seed: int = 0
  log_every_steps: int = 50
  # Batch shapes: examples go to the narrowest of this many widths (L/8 .. L for 4) that
  # holds them, batches are trimmed to it (bucketing.py); 1: every batch at max_seq_length.
  length_buckets: int = 4

  def validate(self) -> None:
    if self.task not in TASKS:
      raise ValueError(f"task={self.task!r}: expected one of {TASKS}")
    if self.train_file is None and self.eval_file is None and self.predict_file is None:
      raise ValueError("nothing to do: give a train_file (with an eval_file), an eval_file or a "
                       "predict_file")
    if self.train_file is not None and self.eval_file is None:
      raise ValueError("training needs an eval_file: the best epoch is chosen on it")
    for name in ("max_seq_length", "batch_size", "eval_batch_size", "num_epochs",
                 "log_every_steps", "length_buckets"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"{name}={getattr(self, name)}: must be positive")
    if not 0.0 <= self.warmup_fraction < 1.0:
      raise ValueError(f"warmup_fraction={self.warmup_fraction}: must lie in [0, 1)")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate={self.learning_rate}: must be positive")
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank={self.lora_rank}: must be >= 0")
    metric = self.best_metric
    allowed = {"classification": ("accuracy", "f1", "f1_macro", "mcc"),
               "regression": ("pearson", "spearman", "corr"),
               "ner": ("f1", "precision", "recall", "token_accuracy")}[self.task]
    if metric not in allowed:
      raise ValueError(f"metric_for_best={metric!r}: for task={self.task} choose one of {allowed}")

  @property
  def best_metric(self) -> str:
    return self.metric_for_best or DEFAULT_BEST_METRIC[self.task]


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class TaskData:
  """One file, read and encoded. `items` are the raw examples / sentences."""
  path: str
  items: list
  arrays: dict[str, np.ndarray]
  word_positions: list[np.ndarray] | None = None  # NER: where each word's tag is read

  @property
  def labelled(self) -> bool:
    return "labels" in self.arrays

  def __len__(self):
    return len(self.items)


def _read(cfg: FinetuneConfig, path: str, labelled: bool):
  from data_pipeline import finetune_data as fd
  if cfg.task == "ner":
    return fd.read_tagged_sentences(path, labelled=labelled, tokens_key=cfg.tokens_key,
                                    tags_key=cfg.tags_key)
  return fd.read_text_examples(path, task=cfg.task, text_column=cfg.text_column,
                               text_pair_column=cfg.text_pair_column,
                               label_column=cfg.label_column, labelled=labelled)


def _encode(cfg: FinetuneConfig, path: str, items, tokenizer, label_list) -> TaskData:
  from data_pipeline import finetune_data as fd
  if cfg.task == "ner":
    fd.check_labels(path, items, label_list)
    enc = fd.encode_tagged_sentences(items, tokenizer, cfg.max_seq_length, label_list=label_list)
    if enc.num_truncated_words:
      logging.warning("%s: %d words beyond max_seq_length=%d are not seen by the model "
                      "(predicted 'O')", path, enc.num_truncated_words, cfg.max_seq_length)
    return TaskData(path, list(items), enc.arrays, enc.word_positions)
  if cfg.task == "classification":
    fd.check_labels(path, items, label_list)
  arrays = fd.encode_text_examples(items, tokenizer, cfg.max_seq_length, task=cfg.task,
                                   label_list=label_list)
  return TaskData(path, list(items), arrays)


def _label_list(cfg: FinetuneConfig, train_items, checkpoint_labels) -> list[str]:
  from data_pipeline import finetune_data as fd
  if cfg.task == "regression":
    return []
  if cfg.labels:
    return list(cfg.labels)
  if train_items is not None:
    if cfg.task == "ner":
      return fd.infer_label_list((t for s in train_items for t in s.tags), ner=True)
    return fd.infer_label_list(e.label for e in train_items)
  if checkpoint_labels:
    return list(checkpoint_labels)
  raise ValueError(f"{cfg.init_from}: without a train_file the label set comes from the "
                   "checkpoint's config.json (id2label), which has none; pass labels")


def _checkpoint_labels(directory: str) -> list[str] | None:
  """The label names of a fine-tuned checkpoint (config.json's id2label), if any."""
  with open(os.path.join(directory, interop.CONFIG_NAME)) as f:
    hf = json.load(f)
  id2label = hf.get("id2label")
  if not id2label or not any(a.startswith("BertFor") and a != "BertForPreTraining"
                             for a in hf.get("architectures") or []):
    return None
  return [id2label[str(i)] for i in range(len(id2label))]


# ----------------------------------------------------------------------------- model


@flax.struct.dataclass
class FinetuneState:
  step: jax.Array
  params: Any      # the trained tree: {"model": subtree of the model's params, "lora": adapters?}
  opt_state: Any
  rng: jax.Array   # dropout key of step s: fold_in(rng, s)


def task_model(task: str, config: model_lib.BertConfig, num_labels: int) -> nn.Module:
  if task == "ner":
    return model_lib.BertForTokenClassification(config, num_labels)
  return model_lib.BertForSequenceClassification(config, 1 if task == "regression" else num_labels)


def task_loss(task: str, logits: jax.Array, batch) -> tuple[jax.Array, jax.Array]:
  """(mean loss, number of scored items) of one batch, float32.

  Padding rows (added to fill the last batch) have no [CLS], so
  `attention_mask[:, 0]` is their weight; NER scores tokens whose label is not
  IGNORE_INDEX.
  """
  logits = logits.astype(jnp.float32)
  labels = batch["labels"]
  if task == "ner":
    valid = labels != IGNORE_INDEX
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    weights = valid.astype(jnp.float32)
  else:
    weights = batch["attention_mask"][:, 0].astype(jnp.float32)
    if task == "regression":
      ce = jnp.square(logits[:, 0] - labels.astype(jnp.float32))
    else:
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  count = jnp.sum(weights)
  return jnp.sum(ce * weights) / jnp.maximum(count, 1.0), count


def assemble(trainable, frozen, lora_scale: float):
  """The model's full parameter tree from the trained and the frozen parts."""
  params = lora.combine(trainable["model"], frozen)
  if "lora" in trainable:
    params = lora.merge(params, trainable["lora"], lora_scale)
  return params


def _forward(model, trainable, frozen, batch, lora_scale, *, deterministic, rng=None):
  return model.apply({"params": assemble(trainable, frozen, lora_scale)}, batch["input_ids"],
                     batch["token_type_ids"], batch["attention_mask"],
                     deterministic=deterministic, rngs=None if rng is None else {"dropout": rng})


def train_step(state: FinetuneState, frozen, batch, *, model, tx, schedule, task, lora_scale):
  """One AdamW step on the trained parameters (pure; jit it)."""
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(trainable):
    logits = _forward(model, trainable, frozen, batch, lora_scale, deterministic=False, rng=rng)
    return task_loss(task, logits, batch)

  (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(loss=loss, count=count, grad_norm=optax.tree.norm(grads),
                 learning_rate=jnp.asarray(schedule(state.step), jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def predict_step(trainable, frozen, batch, *, model, task, lora_scale):
  """Class probabilities [B, K], regression values [B], or NER tag ids [B, L]."""
  logits = _forward(model, trainable, frozen, batch, lora_scale, deterministic=True)
  logits = logits.astype(jnp.float32)
  if task == "ner":
    return jnp.argmax(logits, -1).astype(jnp.int32)
  if task == "regression":
    return logits[:, 0]
  return jax.nn.softmax(logits, -1)


@dataclasses.dataclass
class Setup:
  """A model ready to train on a mesh: state, frozen parameters, compiled steps."""
  model: nn.Module
  bert_config: model_lib.BertConfig
  mesh: jax.sharding.Mesh
  state: FinetuneState
  frozen: Any
  loaded: frozenset                   # parameter paths that came from the checkpoint
  lora_scale: float
  train: Callable                     # (state, frozen, batch) -> (state, metrics)
  predict: Callable                   # (trainable, frozen, batch) -> outputs
  schedule: optax.Schedule
  trainable_count: int
  total_count: int
  _cache: dict = dataclasses.field(default_factory=dict, repr=False)

  def merged_params(self, trainable=None):
    """The full parameter tree with LoRA merged in (device arrays)."""
    trainable = self.state.params if trainable is None else trainable
    if "merge" not in self._cache:  # one compilation per run, not per save
      self._cache["merge"] = jax.jit(functools.partial(assemble, lora_scale=self.lora_scale))
    with partitioning.axis_rules(self.mesh):
      return self._cache["merge"](trainable, self.frozen)


def _place(value: np.ndarray, sharding) -> jax.Array:
  # Every process holds the whole checkpoint; each device takes its own slice.
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def build(cfg: FinetuneConfig, bert_config: model_lib.BertConfig, pretrained: dict,
          num_labels: int, mesh: jax.sharding.Mesh, num_train_steps: int,
          head: dict | None = None) -> Setup:
  """Task model on `mesh` from the checkpoint's (NumPy) `pretrained` params.

  `head` ({"classifier": {...}} NumPy) replaces the fresh task head. Leaves the
  checkpoint does not provide are initialised (seed `cfg.seed`) and trained
  even under LoRA.
  """
  rules = partitioning.DEFAULT_RULES
  model = task_model(cfg.task, bert_config, num_labels)
  inputs = model_lib.dummy_inputs(bert_config, 1, cfg.max_seq_length, None)
  key = jax.random.PRNGKey(cfg.seed)
  init_key, lora_key, dropout_key = jax.random.split(key, 3)

  def init_fn(rng):
    return model.init(rng, **inputs, deterministic=True)["params"]

  with partitioning.axis_rules(mesh, rules):
    boxed = jax.eval_shape(init_fn, init_key)
  params, shardings = partitioning.create_sharded(init_fn, mesh, rules, init_key)
  source = interop.flatten_tree({**pretrained, **(head or {})})
  flat_params, flat_shardings = interop.flatten_tree(params), interop.flatten_tree(shardings)
  loaded = set()
  for path, value in flat_params.items():
    if path in source:
      if tuple(source[path].shape) != tuple(value.shape):
        raise ValueError(f"{cfg.init_from}: parameter {'/'.join(path)} has shape "
                         f"{source[path].shape}, the model needs {value.shape}")
      flat_params[path] = _place(source[path].astype(value.dtype), flat_shardings[path])
      loaded.add(path)
  fresh = sorted("/".join(p) for p in flat_params if p not in loaded)
  logging.info("initialised fresh (not in the checkpoint): %s", ", ".join(fresh) or "nothing")
  params = interop.unflatten_tree(flat_params)

  use_lora = cfg.lora_rank > 0
  is_trained = (lambda path: path not in loaded) if use_lora else (lambda path: True)
  trained_model, frozen = lora.split(params, is_trained)
  boxed_model, _ = lora.split(boxed, is_trained)
  trained_shardings, frozen_shardings = lora.split(shardings, is_trained)
  trainable, boxed_trainable = {"model": trained_model}, {"model": boxed_model}
  if use_lora:
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    adapter_init = functools.partial(lora.init_adapters, params=shapes, rank=cfg.lora_rank,
                                     targets=cfg.lora_targets)
    with partitioning.axis_rules(mesh, rules):
      boxed_trainable["lora"] = jax.eval_shape(adapter_init, lora_key)
    trainable["lora"], _ = partitioning.create_sharded(adapter_init, mesh, rules, lora_key)

  warmup = int(cfg.warmup_fraction * num_train_steps)
  schedule = optim.make_schedule(learning_rate=cfg.learning_rate, warmup_steps=warmup,
                                 total_steps=num_train_steps)
  tx = optim.make_optimizer(schedule, weight_decay=cfg.weight_decay,
                            grad_clip_norm=cfg.grad_clip_norm)

  # Box the trained values with their logical axes so that the optimizer moments
  # inherit them, then build the state straight into its shardings.
  def make_state(boxed_values, rng):
    return FinetuneState(step=jnp.zeros((), jnp.int32), params=boxed_values,
                         opt_state=tx.init(boxed_values), rng=rng)

  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
  boxed_values = jax.tree.map(lambda b, v: b.replace_boxed(v), boxed_trainable, trainable,
                              is_leaf=is_box)
  with partitioning.axis_rules(mesh, rules):
    state_shardings = partitioning.shardings_for(
        jax.eval_shape(make_state, boxed_values, dropout_key), mesh, rules)
    state = jax.jit(lambda b, r: nn.unbox(make_state(b, r)),
                    out_shardings=state_shardings)(boxed_values, dropout_key)

  lora_scale = cfg.lora_alpha / cfg.lora_rank if use_lora else 0.0
  batch_sharding = partitioning.batch_sharding(mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  train = jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule, task=cfg.task,
                        lora_scale=lora_scale),
      in_shardings=(state_shardings, frozen_shardings, batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=0)
  predict = jax.jit(
      functools.partial(predict_step, model=model, task=cfg.task, lora_scale=lora_scale),
      in_shardings=(state_shardings.params, frozen_shardings, batch_sharding),
      out_shardings=replicated)

  return Setup(model=model, bert_config=bert_config, mesh=mesh, state=state, frozen=frozen,
               loaded=frozenset(loaded), lora_scale=lora_scale,
               train=partitioning.in_mesh(train, mesh, rules),
               predict=partitioning.in_mesh(predict, mesh, rules), schedule=schedule,
               trainable_count=lora.count(state.params),
               total_count=lora.count(params) + (lora.count(trainable["lora"]) if use_lora else 0))


# ----------------------------------------------------------------------------- batches


def _pad_rows(arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  """`arrays` grown to `rows` rows with padding examples (no tokens, no loss)."""
  n = len(next(iter(arrays.values())))
  if n == rows:
    return arrays
  out = {}
  for k, v in arrays.items():
    fill = IGNORE_INDEX if (k == "labels" and v.ndim == 2) else 0
    pad = np.full((rows - n,) + v.shape[1:], fill, v.dtype)
    out[k] = np.concatenate([v, pad])
  return out


def _local_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This process's slice of a global batch (processes take consecutive blocks)."""
  count, index = jax.process_count(), jax.process_index()
  rows = len(next(iter(batch.values()))) // count
  return {k: v[index * rows:(index + 1) * rows] for k, v in batch.items()}


def _widths(arrays: dict[str, np.ndarray], length_buckets: int) -> tuple[int, ...]:
  return bucketing.bucket_widths(arrays["input_ids"].shape[1], length_buckets)


def epoch_steps(arrays: dict[str, np.ndarray], batch_size: int, length_buckets: int) -> int:
  """Batches per epoch: each bucket's last one may be partly padding."""
  return bucketing.num_batches(bucketing.lengths_of(arrays["attention_mask"]),
                               _widths(arrays, length_buckets), batch_size)


def train_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int, epoch: int,
                  length_buckets: int = 1):
  """One epoch of global batches in a (seed, epoch)-determined order, each cut to its
  length bucket's width; a bucket's last batch is padded with empty rows."""
  width_of = _widths(arrays, length_buckets)
  plan = bucketing.train_plan(bucketing.lengths_of(arrays["attention_mask"]), width_of,
                              batch_size, seed, epoch)
  full = arrays["input_ids"].shape[1]
  for width, idx in plan:
    yield _pad_rows(bucketing.take(arrays, idx, width, full), batch_size)


def predict_all(setup: Setup, trainable, data: TaskData, batch_size: int, task: str,
                length_buckets: int = 1) -> np.ndarray:
  """Outputs of `predict_step` for every row of `data`, in input order (NumPy); per-token
  outputs at full max_seq_length width whatever the bucket."""
  keys = ("input_ids", "token_type_ids", "attention_mask")
  arrays = {k: data.arrays[k] for k in keys}
  n, full = arrays["input_ids"].shape
  plan = bucketing.eval_plan(bucketing.lengths_of(arrays["attention_mask"]),
                             _widths(arrays, length_buckets), batch_size)

  def pieces():
    for width, idx in plan:
      rows = bucketing.take(arrays, idx, width, full)
      batch = partitioning.host_to_device(_local_rows(_pad_rows(rows, batch_size)), setup.mesh)
      out = np.asarray(jax.device_get(setup.predict(trainable, setup.frozen, batch)))
      yield idx, out[:len(idx)]

  return bucketing.scatter_outputs(pieces(), n, full, per_token=task == "ner")


# ----------------------------------------------------------------------------- evaluation


def decode_tags(data: TaskData, tag_ids: np.ndarray, label_list: Sequence[str]) -> list[list[str]]:
  """Per sentence, one tag per word: read at each word's first sub-token; words cut off
  by max_seq_length get 'O'."""
  out = []
  for i, sentence in enumerate(data.items):
    pos = data.word_positions[i]
    tags = [label_list[t] for t in tag_ids[i, pos]]
    out.append(tags + ["O"] * (len(sentence.tokens) - len(tags)))
  return out


def score(task: str, data: TaskData, outputs: np.ndarray, label_list) -> tuple[dict, str]:
  """(metrics, report table) of `outputs` against `data`'s labels."""
  if task == "ner":
    return eval_metrics.ner_metrics([list(s.tags) for s in data.items],
                                    decode_tags(data, outputs, label_list))
  if task == "regression":
    return eval_metrics.regression_metrics(data.arrays["labels"], outputs)
  return eval_metrics.classification_metrics(data.arrays["labels"], outputs.argmax(-1),
                                             label_list)


def _write_atomic(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_predictions(path: str, task: str, data: TaskData, outputs: np.ndarray,
                      label_list) -> str:
  """Predictions as JSONL (one object per example) or CoNLL (`token tag` lines)."""
  if task == "ner":
    path += ".conll"
    lines = []
    for sentence, tags in zip(data.items, decode_tags(data, outputs, label_list)):
      lines.extend(f"{tok} {tag}" for tok, tag in zip(sentence.tokens, tags))
      lines.append("")
    _write_atomic(path, "\n".join(lines) + "\n")
    return path
  path += ".jsonl"
  lines = []
  for ex, out in zip(data.items, outputs):
    row = {"line": ex.line, "text": ex.text}
    if ex.text_pair is not None:
      row["text_pair"] = ex.text_pair
    if task == "regression":
      row["prediction"] = float(out)
    else:
      row["prediction"] = label_list[int(out.argmax())]
      row["probabilities"] = {name: round(float(p), 6) for name, p in zip(label_list, out)}
    if ex.label is not None:
      row["label"] = ex.label
    lines.append(json.dumps(row, ensure_ascii=False))
  _write_atomic(path, "\n".join(lines) + "\n")
  return path


# ----------------------------------------------------------------------------- saving


def _to_host(tree):
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  def one(x):
    if x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(one, tree)


def save_model(directory: str, cfg: FinetuneConfig, bert_config: model_lib.BertConfig,
               params, label_list: Sequence[str], tokenizer) -> None:
  """A transformers directory for the task model; built beside `directory`, then
  renamed over it, so a crash never leaves a half-written model in its place."""
  from data_pipeline import hf_tokenizer  # pylint: disable=import-outside-toplevel
  host = _to_host(params)  # every process joins the gather; process 0 writes
  if jax.process_index() != 0:
    return
  tmp = directory + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  interop.save_hf(bert_config, host, tmp)
  config_path = os.path.join(tmp, interop.CONFIG_NAME)
  with open(config_path) as f:
    hf = json.load(f)
  names = list(label_list) if cfg.task != "regression" else ["LABEL_0"]
  hf.update(architectures=[_ARCHITECTURES[cfg.task]],
            id2label={str(i): n for i, n in enumerate(names)},
            label2id={n: i for i, n in enumerate(names)})
  if cfg.task == "regression":
    hf["problem_type"] = "regression"
  elif cfg.task == "classification":
    hf["problem_type"] = "single_label_classification"
  _write_atomic(config_path, json.dumps(hf, indent=2, sort_keys=True))
  hf_tokenizer.export_tokenizer(tokenizer, tmp, model_max_length=bert_config.max_position_embeddings)
  meta = dict(task=cfg.task, labels=list(label_list), max_seq_length=cfg.max_seq_length,
              text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
              label_column=cfg.label_column, lora_rank=cfg.lora_rank,
              lora_alpha=cfg.lora_alpha, lora_merged=cfg.lora_rank > 0)
  _write_atomic(os.path.join(tmp, FINETUNE_META), json.dumps(meta, indent=1))
  old = directory + ".old"
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(directory):
    os.replace(directory, old)
  os.replace(tmp, directory)
  shutil.rmtree(old, ignore_errors=True)


def _read_head(directory: str, task: str, num_labels: int, hidden: int) -> dict | None:
  """The task head of a fine-tuned transformers checkpoint, in our layout, or None."""
  tensors = interop.read_state_dict(directory)
  w, b = tensors.get("classifier.weight"), tensors.get("classifier.bias")
  want = 1 if task == "regression" else num_labels
  if w is None or b is None or w.shape != (want, hidden) or b.shape != (want,):
    return None
  return {"classifier": {"kernel": np.ascontiguousarray(w.T), "bias": b}}


# ----------------------------------------------------------------------------- the run


def run(cfg: FinetuneConfig) -> dict:
  """Fine-tunes (or, without train_file, evaluates / predicts); returns the results
  written to eval_results.json (`history` holds every epoch's eval metrics)."""
  from data_pipeline import tokenizers as tokenizers_lib  # pylint: disable=import-outside-toplevel
  cfg.validate()
  mesh = partitioning.make_mesh(cfg.mesh_shape)
  dp = partitioning.data_parallel_size(mesh)
  for name in ("batch_size", "eval_batch_size"):
    if getattr(cfg, name) % dp:
      raise ValueError(f"{name}={getattr(cfg, name)} is not divisible by the {dp} data-parallel "
                       f"devices (data x fsdp of mesh {dict(mesh.shape)})")
  bert_config, pretrained, report = interop.load_hf_with_report(cfg.init_from, dtype=cfg.dtype)
  logging.info("%s", report)
  try:
    tokenizer = tokenizers_lib.load_tokenizer(cfg.init_from)
  except ValueError as e:
    raise ValueError(f"{cfg.init_from}: no usable tokenizer (vocab.txt or a SentencePiece "
                     f".model): {e}") from e
  if tokenizer.vocab_size > bert_config.vocab_size:
    raise ValueError(f"{cfg.init_from}: the tokenizer has {tokenizer.vocab_size} ids but "
                     f"config.json's vocab_size is {bert_config.vocab_size}")
  if cfg.max_seq_length > bert_config.max_position_embeddings:
    raise ValueError(f"max_seq_length={cfg.max_seq_length} exceeds the checkpoint's "
                     f"max_position_embeddings={bert_config.max_position_embeddings}")

  train_items = _read(cfg, cfg.train_file, True) if cfg.train_file else None
  label_list = _label_list(cfg, train_items, _checkpoint_labels(cfg.init_from))
  train = _encode(cfg, cfg.train_file, train_items, tokenizer, label_list) if train_items else None
  evaluation = (_encode(cfg, cfg.eval_file, _read(cfg, cfg.eval_file, True), tokenizer,
                        label_list) if cfg.eval_file else None)
  to_predict = (_encode(cfg, cfg.predict_file, _read(cfg, cfg.predict_file, False), tokenizer,
                        label_list) if cfg.predict_file else None)

  head = None
  if _checkpoint_labels(cfg.init_from) == (label_list or ["LABEL_0"]):
    head = _read_head(cfg.init_from, cfg.task, len(label_list), bert_config.hidden_size)
  if train is None and head is None:
    raise ValueError(f"{cfg.init_from}: no task head for {cfg.task} with labels {label_list}; "
                     "evaluating or predicting without a train_file needs a fine-tuned "
                     "checkpoint (e.g. OUT/best_model of an earlier run)")
  pretrained = {k: v for k, v in pretrained.items() if k == "bert"}
  steps_per_epoch = (epoch_steps(train.arrays, cfg.batch_size, cfg.length_buckets) if train
                     else 1)
  total_steps = steps_per_epoch * cfg.num_epochs if train else 1
  setup = build(cfg, bert_config, pretrained, max(len(label_list), 1), mesh, total_steps, head)
  logging.info("trainable parameters: %s of %s (%.2f%%)", f"{setup.trainable_count:,}",
               f"{setup.total_count:,}", 100.0 * setup.trainable_count / setup.total_count)

  os.makedirs(cfg.output_dir, exist_ok=True)
  # A finished run's results must not survive into a new run that then fails.
  if jax.process_index() == 0:
    for stale in ("eval_results.json",):
      if os.path.exists(os.path.join(cfg.output_dir, stale)):
        os.remove(os.path.join(cfg.output_dir, stale))
  best_dir = os.path.join(cfg.output_dir, BEST_MODEL_DIR)
  history: list[dict] = []
  best = None  # (metric value, epoch, trainable copy, eval outputs, metrics, table)
  state = setup.state
  train_loss = None
  if train is not None:
    state, history, best, train_loss = _train(cfg, setup, train, evaluation, label_list,
                                              tokenizer, best_dir, steps_per_epoch, total_steps)
  else:
    outputs = predict_all(setup, state.params, evaluation, cfg.eval_batch_size, cfg.task,
                          cfg.length_buckets) \
        if evaluation else None
    metrics, table = score(cfg.task, evaluation, outputs, label_list) if evaluation else ({}, "")
    best = (None, 0, state.params, outputs, metrics, table)

  _, best_epoch, best_params, best_outputs, best_metrics, best_table = best
  results = dict(task=cfg.task, best_epoch=best_epoch, metric_for_best=cfg.best_metric,
                 **{f"eval_{k}": v for k, v in best_metrics.items()},
                 num_train_examples=len(train) if train else 0,
                 num_eval_examples=len(evaluation) if evaluation else 0,
                 trainable_parameters=setup.trainable_count,
                 total_parameters=setup.total_count, lora_rank=cfg.lora_rank,
                 train_steps=total_steps if train else 0)
  if train_loss is not None:
    results["train_loss"] = train_loss
  if train is not None:
    results["best_model_dir"] = best_dir
  if to_predict is not None:
    outputs = predict_all(setup, best_params, to_predict, cfg.eval_batch_size, cfg.task,
                          cfg.length_buckets)
    if jax.process_index() == 0:
      results["predictions_file"] = write_predictions(
          os.path.join(cfg.output_dir, "predictions"), cfg.task, to_predict, outputs, label_list)
  if jax.process_index() == 0:
    if evaluation is not None:
      results["eval_predictions_file"] = write_predictions(
          os.path.join(cfg.output_dir, "eval_predictions"), cfg.task, evaluation, best_outputs,
          label_list)
      _write_atomic(os.path.join(cfg.output_dir, "eval_report.txt"), best_table + "\n")
    _write_atomic(os.path.join(cfg.output_dir, "eval_results.json"),
                  json.dumps({**results, "history": history}, indent=1))
  return {**results, "history": history}


def _train(cfg, setup: Setup, train: TaskData, evaluation: TaskData, label_list, tokenizer,
           best_dir, steps_per_epoch, total_steps):
  state = setup.state
  history, best = [], None
  step, start = 0, time.perf_counter()
  last_epoch_loss = None
  for epoch in range(1, cfg.num_epochs + 1):
    losses = []
    for batch in train_batches(train.arrays, cfg.batch_size, cfg.seed, epoch,
                               cfg.length_buckets):
      state, metrics = setup.train(state, setup.frozen,
                                   partitioning.host_to_device(_local_rows(batch), setup.mesh))
      losses.append(metrics["loss"])
      step += 1
      if step % cfg.log_every_steps == 0 or step == total_steps:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
          raise FloatingPointError(f"non-finite loss {loss} at step {step}; stopping the run")
        if jax.process_index() == 0:
          print(f"step {step}/{total_steps} epoch {epoch} | loss {loss:.4f} | lr "
                f"{float(metrics['learning_rate']):.3g} | {time.perf_counter() - start:.0f}s",
                flush=True)
    last_epoch_loss = float(np.mean(jax.device_get(losses)))
    if not math.isfinite(last_epoch_loss):
      raise FloatingPointError(f"non-finite training loss in epoch {epoch}")
    outputs = predict_all(setup, state.params, evaluation, cfg.eval_batch_size, cfg.task,
                          cfg.length_buckets)
    metrics, table = score(cfg.task, evaluation, outputs, label_list)
    history.append(dict(epoch=epoch, step=step, train_loss=last_epoch_loss, **metrics))
    value = metrics[cfg.best_metric]
    improved = best is None or value > best[0]
    if jax.process_index() == 0:
      print(f"epoch {epoch}: train loss {last_epoch_loss:.4f} | " + " | ".join(
          f"{k} {v:.4f}" for k, v in metrics.items()) + (" | best so far" if improved else ""),
            flush=True)
    if improved:
      # A copy: the state's buffers are donated to the next step.
      kept = jax.tree.map(jnp.copy, state.params)
      best = (value, epoch, kept, outputs, metrics, table)
      save_model(best_dir, cfg, setup.bert_config, setup.merged_params(kept), label_list,
                 tokenizer)
  return state, history, best, last_epoch_loss
