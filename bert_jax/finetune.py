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

The loop names no task: the model side of a task (head, loss, row predictions,
scoring, HF architecture, default metric) is a `bert_jax.tasks.Task`; the text side
(reading files, encoding, aligning labels, decoding rows into examples, prediction
files, the tokenizer and its export) is handed in by the caller (`run(cfg, text)`,
`launch/finetune.py` passes the text package's `finetune_text`), so this module imports no text tooling.
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
from typing import Any, Callable, Protocol, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import batch as batch_lib
from bert_jax import bucketing
from bert_jax import fileio
from bert_jax import interop
from bert_jax import lora
from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import partitioning
from bert_jax import tasks as tasks_lib
from bert_jax import tree as tree_lib

TASKS = tasks_lib.NAMES
BEST_MODEL_DIR = "best_model"
FINETUNE_META = "finetune.json"
# FinetuneConfig fields that default to None take the task's `defaults`, else these.
_GENERIC_DEFAULTS = {"max_seq_length": 128, "num_epochs": 3}


def _field(default, help_text: str, **kw):
  """A FinetuneConfig field with the help text its command-line flag shows."""
  return dataclasses.field(default=default, metadata={"help": help_text, **kw})


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """One fine-tuning run. Defaults are BERT's fine-tuning recipe."""
  task: str = _field(None, "What to fine-tune for.", required=True, enum=TASKS)
  init_from: str = _field(
      None, "Hugging Face BERT directory: config.json, model.safetensors or "
      "pytorch_model.bin, and vocab.txt (or a SentencePiece .model).", required=True)
  output_dir: str = _field(None, "Where the best model, metrics and predictions go.",
                           required=True)
  train_file: str | None = _field(None, "CSV/TSV/JSONL, or CoNLL/JSONL for NER. None: "
                                  "evaluate / predict with init_from's head.")
  eval_file: str | None = _field(None, "Labelled evaluation file (same format).")
  predict_file: str | None = _field(None, "Unlabelled input to label.")
  text_column: str = _field("sentence", "Column of the (first) text.")
  text_pair_column: str | None = _field(None, "Column of the second text, for pairs.")
  label_column: str = _field("label", "Column of the label.")
  tokens_key: str = _field("tokens", "NER JSONL: key of the tokens.")
  tags_key: str = _field("tags", "NER JSONL: key of the tags.")
  labels: tuple[str, ...] | None = _field(
      None, "The label set, in id order (default: the sorted labels of the train file).")
  max_seq_length: int | None = _field(None, "Tokens per sequence (default: the task's; 128, "
                                      "QA 384).")
  batch_size: int = _field(32, "Global training batch size.")
  eval_batch_size: int = _field(64, "Global eval batch.")
  learning_rate: float = _field(3e-5, "Peak learning rate (BERT: 2e-5 to 5e-5; LoRA usually "
                                "wants ~1e-4 to 1e-3).")
  num_epochs: int | None = _field(None, "Training epochs (default: the task's; 3, QA 2).")
  warmup_fraction: float = _field(0.1, "Warmup share of the steps.")
  weight_decay: float = _field(0.01, "AdamW weight decay.")
  grad_clip_norm: float = _field(1.0, "Global gradient-norm clipping.")
  lora_rank: int = _field(0, "LoRA rank; 0 = full fine-tuning.")
  lora_alpha: float = _field(16.0, "LoRA scale numerator (scale = alpha / rank).")
  lora_targets: tuple[str, ...] = _field(lora.DEFAULT_TARGETS, "Kernels LoRA adapts.")
  metric_for_best: str | None = _field(
      None, "Eval metric that picks the best epoch (default: the task's; higher is better).")
  mesh_shape: tuple[int, ...] = _field((-1, 1, 1), "data,fsdp,tensor mesh shape (default: "
                                       "all devices data-parallel).")
  dtype: str = _field("float32", "Compute dtype.", enum=("float32", "bfloat16"))
  seed: int = _field(0, "Seed of the head init, order and dropout.")
  log_every_steps: int = _field(50, "Progress interval.")
  length_buckets: int = _field(
      4, "Batch widths examples are bucketed into (4: L/8, L/4, L/2, L; see "
      "bert_jax/bucketing.py); 1: every batch padded to max_seq_length.")
  # Question answering (--task=qa); BERT's run_squad.py defaults.
  version_2_with_negative: bool = _field(
      False, "QA: SQuAD v2.0, questions may have no answer (is_impossible).")
  doc_stride: int = _field(128, "QA: tokens between the STARTS of consecutive context windows "
                           "(BERT's doc_stride; transformers' stride is the overlap instead).")
  max_query_length: int = _field(64, "QA: question tokens kept (the rest is cut).")
  n_best_size: int = _field(20, "QA: start / end candidates per window, and n-best list size.")
  max_answer_length: int = _field(30, "QA: longest answer, in tokens.")
  null_score_diff_threshold: float = _field(
      0.0, "QA v2.0: answer \"\" when null score - best span score exceeds this (tune it: "
      "eval_results.json's eval_best_f1_thresh).")
  qa_metric: str = _field("auto", "QA scoring: squad (official EM/F1), cmrc (CMRC 2018, "
                          "Chinese), auto (cmrc when the contexts are mostly CJK).",
                          enum=("auto", "squad", "cmrc"))

  def with_task_defaults(self) -> "FinetuneConfig":
    """This config with the unset (None) fields filled from the task's defaults."""
    task = tasks_lib.get(self.task)
    defaults = {**_GENERIC_DEFAULTS, **task.defaults}
    filled = {name: defaults[name] for name in _GENERIC_DEFAULTS if getattr(self, name) is None}
    return dataclasses.replace(self, **filled)

  def validate(self) -> None:
    for name in ("task", "init_from", "output_dir"):
      if not getattr(self, name):
        raise ValueError(f"{name} is required")
    task = tasks_lib.get(self.task)
    resolved = self.with_task_defaults()
    if self.train_file is None and self.eval_file is None and self.predict_file is None:
      raise ValueError("nothing to do: give a train_file (with an eval_file), an eval_file or a "
                       "predict_file")
    if self.train_file is not None and self.eval_file is None:
      raise ValueError("training needs an eval_file: the best epoch is chosen on it")
    for name in ("max_seq_length", "batch_size", "eval_batch_size", "num_epochs",
                 "log_every_steps", "length_buckets", "doc_stride", "max_query_length", "n_best_size",
                 "max_answer_length"):
      if int(getattr(resolved, name)) <= 0:
        raise ValueError(f"{name}={getattr(resolved, name)}: must be positive")
    if not 0.0 <= self.warmup_fraction < 1.0:
      raise ValueError(f"warmup_fraction={self.warmup_fraction}: must lie in [0, 1)")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate={self.learning_rate}: must be positive")
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank={self.lora_rank}: must be >= 0")
    metric = self.best_metric
    if metric not in task.metric_names:
      raise ValueError(f"metric_for_best={metric!r}: for task={self.task} choose one of "
                       f"{task.metric_names}")

  @property
  def best_metric(self) -> str:
    return self.metric_for_best or tasks_lib.get(self.task).default_metric

  def text_options(self) -> dict:
    """The reading options the text side takes (the text package's `finetune_text`)."""
    return dict(text_column=self.text_column, text_pair_column=self.text_pair_column,
                label_column=self.label_column, tokens_key=self.tokens_key,
                tags_key=self.tags_key, version_2_with_negative=self.version_2_with_negative,
                doc_stride=self.doc_stride, max_query_length=self.max_query_length,
                n_best_size=self.n_best_size, max_answer_length=self.max_answer_length,
                null_score_diff_threshold=self.null_score_diff_threshold,
                qa_metric=self.qa_metric)


class TextSide(Protocol):
  """The text side of a task, handed to `run` (see `launch/finetune.py`):
  tokenizer, reading, encoding, decoding rows into examples, prediction files."""

  def load_tokenizer(self, directory: str) -> Any: ...
  def export_tokenizer(self, tokenizer, directory: str, model_max_length: int) -> None: ...
  def read(self, path: str, labelled: bool) -> list: ...
  def label_list(self, train_items, given) -> list[str] | None: ...
  def encode(self, path, items, tokenizer, label_list, max_seq_length) -> "EncodedData": ...
  def references(self, encoded) -> Any: ...
  def decode(self, encoded, row_outputs, label_list) -> Any: ...
  def write_predictions(self, stem, encoded, predictions, label_list) -> str: ...
  def meta(self) -> dict: ...


class EncodedData(Protocol):
  """An encoded file: `arrays` ([N_rows, ...] model inputs, plus labels when
  labelled), `len()` = number of examples."""
  path: str
  arrays: dict[str, np.ndarray]

  @property
  def labelled(self) -> bool: ...

  def __len__(self) -> int: ...


# ----------------------------------------------------------------------------- data


def _label_list(cfg: FinetuneConfig, text: TextSide, train_items, checkpoint_labels
                ) -> list[str]:
  """The label names: the text side's (given, or those of the train file), else the
  checkpoint's (id2label)."""
  labels = text.label_list(train_items, cfg.labels)
  if labels is not None:
    return labels
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


def train_step(state: FinetuneState, frozen, batch, *, model, tx, schedule,
               task: tasks_lib.Task, lora_scale):
  """One AdamW step on the trained parameters (pure; jit it)."""
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(trainable):
    logits = _forward(model, trainable, frozen, batch, lora_scale, deterministic=False, rng=rng)
    return task.loss(logits, batch)

  (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(loss=loss, count=count, grad_norm=optax.tree.norm(grads),
                 learning_rate=jnp.asarray(schedule(state.step), jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def predict_step(trainable, frozen, batch, *, model, task: tasks_lib.Task, lora_scale):
  """The task's per-row predictions (e.g. class probabilities [B, K], tag ids [B, L])."""
  return task.predict(_forward(model, trainable, frozen, batch, lora_scale, deterministic=True))


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
  task = tasks_lib.get(cfg.task)
  model = task.model(bert_config, num_labels)
  inputs = model_lib.dummy_inputs(bert_config, 1, cfg.max_seq_length, None)
  key = jax.random.PRNGKey(cfg.seed)
  init_key, lora_key, dropout_key = jax.random.split(key, 3)

  def init_fn(rng):
    return model.init(rng, **inputs, deterministic=True)["params"]

  with partitioning.axis_rules(mesh, rules):
    boxed = jax.eval_shape(init_fn, init_key)
  params, shardings = partitioning.create_sharded(init_fn, mesh, rules, init_key)
  source = tree_lib.flatten({**pretrained, **(head or {})})
  flat_params, flat_shardings = tree_lib.flatten(params), tree_lib.flatten(shardings)
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
  params = tree_lib.unflatten(flat_params)

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
      functools.partial(train_step, model=model, tx=tx, schedule=schedule, task=task,
                        lora_scale=lora_scale),
      in_shardings=(state_shardings, frozen_shardings, batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=0)
  predict = jax.jit(
      functools.partial(predict_step, model=model, task=task, lora_scale=lora_scale),
      in_shardings=(state_shardings.params, frozen_shardings, batch_sharding),
      out_shardings=replicated)

  return Setup(model=model, bert_config=bert_config, mesh=mesh, state=state, frozen=frozen,
               loaded=frozenset(loaded), lora_scale=lora_scale,
               train=partitioning.in_mesh(train, mesh, rules),
               predict=partitioning.in_mesh(predict, mesh, rules), schedule=schedule,
               trainable_count=tree_lib.count_params(state.params),
               total_count=tree_lib.count_params(params) + (tree_lib.count_params(trainable["lora"]) if use_lora else 0))


# ----------------------------------------------------------------------------- batches


def _pad_rows(arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  """`arrays` grown to `rows` rows with padding examples (no tokens, no loss)."""
  n = len(next(iter(arrays.values())))
  if n == rows:
    return arrays
  out = {}
  for k, v in arrays.items():
    fill = batch_lib.IGNORE_INDEX if (k == "labels" and v.ndim == 2) else 0
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
  """Batches per epoch: each length bucket's last one may be partly padding."""
  return bucketing.num_batches(bucketing.lengths_of(arrays["attention_mask"]),
                               _widths(arrays, length_buckets), batch_size)


def train_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int, epoch: int,
                  length_buckets: int = 1):
  """One epoch of global batches in a (seed, epoch)-determined order, each cut to its
  length bucket's width (bucketing.py); a bucket's last batch is padded with empty rows."""
  plan = bucketing.train_plan(bucketing.lengths_of(arrays["attention_mask"]),
                              _widths(arrays, length_buckets), batch_size, seed, epoch)
  full = arrays["input_ids"].shape[1]
  for width, idx in plan:
    yield _pad_rows(bucketing.take(arrays, idx, width, full), batch_size)


def predict_all(setup: Setup, trainable, data: EncodedData, batch_size: int, *,
                per_token: bool = False, length_buckets: int = 1) -> Any:
  """Outputs of `predict_step` for every row of `data`, in input order (NumPy; a pytree
  when the task predicts several arrays per row). Rows are run in length buckets;
  `per_token` outputs ([B, width, ...]) come back at full max_seq_length width."""
  keys = batch_lib.INPUT_KEYS
  arrays = {k: data.arrays[k] for k in keys}
  n, full = arrays["input_ids"].shape
  plan = bucketing.eval_plan(bucketing.lengths_of(arrays["attention_mask"]),
                             _widths(arrays, length_buckets), batch_size)
  indices, outs = [], []
  for width, idx in plan:
    rows = bucketing.take(arrays, idx, width, full)
    batch = partitioning.host_to_device(_local_rows(_pad_rows(rows, batch_size)), setup.mesh)
    outs.append(jax.tree.map(lambda x, m=len(idx): np.asarray(x)[:m], jax.device_get(
        setup.predict(trainable, setup.frozen, batch))))
    indices.append(idx)
  return jax.tree.map(
      lambda *parts: bucketing.scatter_outputs(zip(indices, parts), n, full, per_token), *outs)


# ----------------------------------------------------------------------------- evaluation


def evaluate(setup: Setup, trainable, data: EncodedData, text: TextSide, task: tasks_lib.Task,
             label_list, batch_size: int, length_buckets: int = 1):
  """(per-example predictions, metrics, report table) of the model on labelled `data`."""
  outputs = predict_all(setup, trainable, data, batch_size, per_token=task.per_token_outputs,
                        length_buckets=length_buckets)
  predictions = text.decode(data, outputs, label_list)
  metrics, table = task.score(text.references(data), predictions, label_list)
  return predictions, metrics, table


# ----------------------------------------------------------------------------- saving


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
  tmp = directory + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
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
  fileio.write_text_atomic(config_path, json.dumps(hf, indent=2, sort_keys=True))
  write_tokenizer(tmp)
  meta = dict(task=cfg.task, labels=list(label_list), max_seq_length=cfg.max_seq_length,
              **(text_meta or {}), lora_rank=cfg.lora_rank,
              lora_alpha=cfg.lora_alpha, lora_merged=cfg.lora_rank > 0)
  fileio.write_text_atomic(os.path.join(tmp, FINETUNE_META), json.dumps(meta, indent=1))
  old = directory + ".old"
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(directory):
    os.replace(directory, old)
  os.replace(tmp, directory)
  shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Best:
  """The best epoch so far: its metric value, trained parameters (a copy), per-example
  eval predictions, metrics and report table."""
  value: float | None
  epoch: int
  params: Any
  predictions: Any
  metrics: dict
  table: str


def run(cfg: FinetuneConfig, text: TextSide) -> dict:
  """Fine-tunes (or, without train_file, evaluates / predicts); returns the results
  written to eval_results.json (`history` holds every epoch's eval metrics). `text`
  is the task's text side (`finetune_text.make_text_task` of the text package)."""
  cfg.validate()
  cfg = cfg.with_task_defaults()
  task = tasks_lib.get(cfg.task)
  mesh = partitioning.make_mesh(cfg.mesh_shape)
  dp = partitioning.data_parallel_size(mesh)
  for name in ("batch_size", "eval_batch_size"):
    if getattr(cfg, name) % dp:
      raise ValueError(f"{name}={getattr(cfg, name)} is not divisible by the {dp} data-parallel "
                       f"devices (data x fsdp of mesh {dict(mesh.shape)})")
  bert_config, pretrained, report = interop.load_hf_with_report(cfg.init_from, dtype=cfg.dtype)
  logging.info("%s", report)
  try:
    tokenizer = text.load_tokenizer(cfg.init_from)
  except ValueError as e:
    raise ValueError(f"{cfg.init_from}: no usable tokenizer (vocab.txt or a SentencePiece "
                     f".model): {e}") from e
  if tokenizer.vocab_size > bert_config.vocab_size:
    raise ValueError(f"{cfg.init_from}: the tokenizer has {tokenizer.vocab_size} ids but "
                     f"config.json's vocab_size is {bert_config.vocab_size}")
  if cfg.max_seq_length > bert_config.max_position_embeddings:
    raise ValueError(f"max_seq_length={cfg.max_seq_length} exceeds the checkpoint's "
                     f"max_position_embeddings={bert_config.max_position_embeddings}")

  def encode(path, items):
    return text.encode(path, items, tokenizer, label_list, cfg.max_seq_length)

  train_items = text.read(cfg.train_file, True) if cfg.train_file else None
  checkpoint_labels = _checkpoint_labels(cfg.init_from)
  label_list = _label_list(cfg, text, train_items, checkpoint_labels)
  train = encode(cfg.train_file, train_items) if train_items else None
  evaluation = encode(cfg.eval_file, text.read(cfg.eval_file, True)) if cfg.eval_file else None
  to_predict = (encode(cfg.predict_file, text.read(cfg.predict_file, False))
                if cfg.predict_file else None)

  head = None
  if task.head_matches(checkpoint_labels, label_list):
    head = task.head_from_hf(interop.read_state_dict(cfg.init_from), len(label_list),
                             bert_config.hidden_size)
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
  train_loss = None

  def save(directory, params):
    save_model(directory, cfg, setup.bert_config, setup.merged_params(params), label_list,
               lambda d: text.export_tokenizer(tokenizer, d, bert_config.max_position_embeddings),
               text.meta())

  if train is not None:
    history, best, train_loss = _train(cfg, setup, task, text, train, evaluation, label_list,
                                       save, best_dir, total_steps)
  elif evaluation is not None:
    best = Best(None, 0, setup.state.params, *evaluate(
        setup, setup.state.params, evaluation, text, task, label_list, cfg.eval_batch_size,
        cfg.length_buckets))
  else:
    best = Best(None, 0, setup.state.params, None, {}, "")

  results = dict(task=cfg.task, best_epoch=best.epoch, metric_for_best=cfg.best_metric,
                 **{f"eval_{k}": v for k, v in best.metrics.items()},
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
    predictions = text.decode(to_predict, predict_all(
        setup, best.params, to_predict, cfg.eval_batch_size,
        per_token=task.per_token_outputs, length_buckets=cfg.length_buckets), label_list)
    if jax.process_index() == 0:
      results["predictions_file"] = text.write_predictions(
          os.path.join(cfg.output_dir, "predictions"), to_predict, predictions, label_list)
  if jax.process_index() == 0:
    if evaluation is not None:
      results["eval_predictions_file"] = text.write_predictions(
          os.path.join(cfg.output_dir, "eval_predictions"), evaluation, best.predictions,
          label_list)
      fileio.write_text_atomic(os.path.join(cfg.output_dir, "eval_report.txt"),
                               best.table + "\n")
    fileio.write_text_atomic(os.path.join(cfg.output_dir, "eval_results.json"),
                             json.dumps({**results, "history": history}, indent=1))
  return {**results, "history": history}


def _train(cfg, setup: Setup, task, text, train, evaluation, label_list, save, best_dir,
           total_steps) -> tuple[list[dict], Best, float]:
  """The epochs: steps, then an evaluation; the best epoch's model saved to `best_dir`."""
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
    predictions, metrics, table = evaluate(setup, state.params, evaluation, text, task,
                                           label_list, cfg.eval_batch_size, cfg.length_buckets)
    history.append(dict(epoch=epoch, step=step, train_loss=last_epoch_loss, **metrics))
    value = metrics[cfg.best_metric]
    improved = best is None or value > best.value
    if jax.process_index() == 0:
      print(f"epoch {epoch}: train loss {last_epoch_loss:.4f} | " + " | ".join(
          f"{k} {v:.4f}" for k, v in metrics.items()) + (" | best so far" if improved else ""),
            flush=True)
    if improved:
      # A copy: the state's buffers are donated to the next step.
      kept = jax.tree.map(jnp.copy, state.params)
      best = Best(value, epoch, kept, predictions, metrics, table)
      save(best_dir, kept)
  return history, best, last_epoch_loss
