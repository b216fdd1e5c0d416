"""Fine-tuning: sequence classification, regression and token classification (NER).

`run(FinetuneConfig)` loads a Hugging Face BERT directory (`interop.load_hf`: the
encoder, and the pooler when present; the task head starts fresh unless the
directory is one of our fine-tuned exports with the same labels), trains with
BERT's fine-tuning recipe (AdamW from `optim`, linear warmup over 10% of the steps
then linear decay, batch 32, 3 epochs, clipping at 1.0) data-parallel on the
`data, fsdp, tensor` mesh, evaluates after every epoch and keeps the best model
(without an eval file: trains the epochs and keeps the last one, no best-epoch choice).

What is trained: everything (full fine-tuning), or under `--peft` (bert_jax/finetune/peft)
LoRA adapters on the attention query and value projections, Houlsby adapters,
per-layer prefixes or the biases (BitFit), plus whatever the checkpoint did not
provide (the task head; the pooler of an encoder-only checkpoint). The rest is frozen: passed to the step as a separate argument, never
differentiated, without optimizer state, so it stays bit-identical.

Outputs in `output_dir` (only process 0 writes):
  best_model/           the best epoch's model as a transformers directory: config.json
                        (with id2label and the task's architecture), model.safetensors
                        (LoRA merged into the kernels), tokenizer files, finetune.json.
                        Written beside and renamed into place: never half-written.
  eval_results.json     the best epoch's eval metrics, per-epoch history, parameter counts,
                        train_runtime and train_samples_per_second (training rows per
                        second of training, compilation included, evaluation not: as
                        transformers' Trainer counts them); written last, so its
                        presence means the run finished.
  skipped_rows.json     per file, the rows not trained on (an empty question, an answer
                        that does not match its offset): id, place, reason; still scored.
  eval_report.txt       the per-class (per-entity-type) table of the best epoch.
  eval_predictions.*    the best model's predictions on the eval file.
  predictions.*         with `predict_file`: its predicted labels.
(`.jsonl` for classification / regression, CoNLL `.conll` for NER.)

The loop names no task: the model side of a task (head, loss, row predictions,
scoring, HF architecture, default metric) is a `bert_jax.finetune.tasks.Task`; the
text side (reading files, encoding, aligning labels, decoding rows into examples,
prediction files, the tokenizer and its export) is handed in by the caller
(`run(cfg, text)`: `launch/finetune.py` passes the text package's task), so this
module imports no text tooling.

Pieces: `build(...)` -> `Setup` (the task model on the mesh, its state and compiled
steps; the pretraining loop's `train.build` -> `train.Setup` are its twins), `Files`
(the encoded train / eval / predict files and the labels), `_train` (the epochs) and
`evaluate` / `predict_all` (length-bucketed inference).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import batch as batch_lib
from bert_jax import compilation_cache
from bert_jax.finetune import bucket_cost
from bert_jax.finetune import bucketing
from bert_jax.finetune import distill
from bert_jax import fileio
from bert_jax import interop
from bert_jax.finetune import lora
from bert_jax.finetune import peft
from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import partitioning
from bert_jax.finetune import tasks as tasks_lib
from bert_jax.finetune import export as finetune_export
from bert_jax import tree as tree_lib
from bert_jax.finetune.config import EncodedData, FinetuneConfig, TextSide
from bert_jax.finetune.export import BEST_MODEL_DIR, save_model


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


# ----------------------------------------------------------------------------- model


@flax.struct.dataclass
class FinetuneState:
  step: jax.Array
  params: Any      # the trained tree: {"model": subtree of the model's params, "lora": adapters?}
  opt_state: Any
  rng: jax.Array   # dropout key of step s: fold_in(rng, s)


def _forward(model, trainable, frozen, batch, lora_scale, *, deterministic, rng=None):
  params = lora.assemble(trainable, frozen, lora_scale)
  return model.apply({"params": params}, batch["input_ids"],
                     batch["token_type_ids"], batch["attention_mask"],
                     deterministic=deterministic, rngs=None if rng is None else {"dropout": rng})


def train_step(state: FinetuneState, frozen, batch, *, model, tx, schedule,
               task: tasks_lib.Task | distill.Objective, lora_scale):
  """One AdamW step on the trained parameters (pure; jit it). Distilling, `task` is a
  `distill.Objective` and `frozen` is (the student's frozen params, the teacher's)."""
  rng = jax.random.fold_in(state.rng, state.step)
  teacher_outputs = None
  if isinstance(task, distill.Objective):  # the teacher's forward: no gradient reaches it
    frozen, teacher_params = frozen
    teacher_outputs = task.teacher_outputs(teacher_params, batch)

  def loss_fn(trainable):
    logits = _forward(model, trainable, frozen, batch, lora_scale, deterministic=False, rng=rng)
    if teacher_outputs is None:
      return task.loss(logits, batch)
    return task.loss(logits, batch, teacher_outputs)

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
  """A task model ready to train on a mesh (what `build` returns; the pretraining
  loop's `train.Setup` is its twin): state, frozen parameters, compiled steps."""
  model: nn.Module
  bert_config: model_lib.BertConfig
  mesh: jax.sharding.Mesh
  task: tasks_lib.Task
  state: FinetuneState
  frozen: Any
  loaded: frozenset                   # parameter paths that came from the checkpoint
  lora_scale: float
  train: Callable                     # (state, frozen, batch) -> (state, metrics)
  predict: Callable                   # (trainable, frozen, batch) -> outputs
  schedule: optax.Schedule
  num_train_steps: int
  trainable_count: int
  total_count: int
  compile_seconds: float = 0.0       # wall time spent in `precompile` (cache loads included)
  teacher: distill.TeacherModel | None = None  # frozen, never exported
  _cache: dict = dataclasses.field(default_factory=dict, repr=False)

  def precompile(self, jobs: list[tuple[str, tuple]]) -> None:
    """Compiles each (step name, arguments) of `jobs` ("train" or "predict") for its
    arguments' shapes, all at once, a thread per core (XLA compiles outside the GIL):
    the length buckets of a run then cost about one compilation's wall time per core
    instead of the sum, each of which would otherwise stall its first step. `step` runs
    the results."""
    todo = {}
    for name, args in jobs:
      key = _shape_key(name, args)
      if key not in self._cache:
        todo[key] = (getattr(self, name).__wrapped__, args)  # the jit under in_mesh

    def compile_one(item):
      jitted, args = item
      with partitioning.axis_rules(self.mesh):
        return jitted.lower(*args).compile()

    if todo:
      workers = min(len(todo), os.cpu_count() or 1)
      start = time.perf_counter()
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        self._cache.update(zip(todo, pool.map(compile_one, todo.values())))
      self.compile_seconds += time.perf_counter() - start

  @property
  def train_frozen(self):
    """The train step's frozen argument: the student's, and the teacher's when distilling."""
    return self.frozen if self.teacher is None else (self.frozen, self.teacher.params)

  def step(self, name: str, *args):
    """Step `name` on `args`: the precompiled executable for their shapes, else the jit."""
    compiled = self._cache.get(_shape_key(name, args))
    return compiled(*args) if compiled is not None else getattr(self, name)(*args)

  def merged_params(self, trainable=None):
    """The full parameter tree with LoRA merged in (device arrays)."""
    trainable = self.state.params if trainable is None else trainable
    if "merge" not in self._cache:  # one compilation per run, not per save
      self._cache["merge"] = jax.jit(functools.partial(lora.assemble, lora_scale=self.lora_scale))
    with partitioning.axis_rules(self.mesh):
      return self._cache["merge"](trainable, self.frozen)


def _shape_key(name: str, args: tuple) -> tuple:
  """What a compiled step depends on among its arguments: the batch (the last one)'s
  shapes; the state and parameters keep theirs for the whole run."""
  return (name,) + tuple(sorted((k, tuple(v.shape)) for k, v in args[-1].items()))


def _place(value: np.ndarray, sharding) -> jax.Array:
  # Every process holds the whole checkpoint; each device takes its own slice.
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _load_params(cfg: FinetuneConfig, model: nn.Module, bert_config: model_lib.BertConfig,
                 mesh: jax.sharding.Mesh, source: dict, init_key: jax.Array):
  """(params on `mesh`, their shardings, the boxed abstract tree, the paths loaded):
  the model initialised fresh, then every leaf `source` (NumPy) provides put in place."""
  rules = partitioning.DEFAULT_RULES
  inputs = model_lib.dummy_inputs(bert_config, 1, cfg.max_seq_length, None)

  def init_fn(rng):
    return model.init(rng, **inputs, deterministic=True)["params"]

  with partitioning.axis_rules(mesh, rules):
    boxed = jax.eval_shape(init_fn, init_key)
  params, shardings = partitioning.create_sharded(init_fn, mesh, rules, init_key)
  source = tree_lib.flatten(source)
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
  return tree_lib.unflatten(flat_params), shardings, boxed, frozenset(loaded)


def _split_trained(cfg: FinetuneConfig, mesh: jax.sharding.Mesh, params, shardings, boxed,
                   loaded: frozenset, lora_key: jax.Array):
  """(trainable values, their boxed twin, frozen values, frozen shardings): everything
  trained, or under LoRA the adapters (new, `lora_key`) plus what was not loaded."""
  rules = partitioning.DEFAULT_RULES
  use_lora = cfg.effective_lora_rank > 0
  is_trained = peft.trainable_rule(cfg.peft_method, loaded)
  trained_model, frozen = lora.split(params, is_trained)
  boxed_model, _ = lora.split(boxed, is_trained)
  _, frozen_shardings = lora.split(shardings, is_trained)
  trainable, boxed_trainable = {"model": trained_model}, {"model": boxed_model}
  if use_lora:
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    adapter_init = functools.partial(lora.init_adapters, params=shapes,
                                     rank=cfg.effective_lora_rank,
                                     targets=cfg.lora_targets)
    with partitioning.axis_rules(mesh, rules):
      boxed_trainable["lora"] = jax.eval_shape(adapter_init, lora_key)
    trainable["lora"], _ = partitioning.create_sharded(adapter_init, mesh, rules, lora_key)
  return trainable, boxed_trainable, frozen, frozen_shardings


def _init_state(tx: optax.GradientTransformation, mesh: jax.sharding.Mesh, trainable,
                boxed_trainable, dropout_key: jax.Array) -> tuple[FinetuneState, Any]:
  """(state, its shardings). The trained values are boxed with their logical axes so
  that the optimizer moments inherit them, then the state is built straight into its
  shardings."""
  rules = partitioning.DEFAULT_RULES

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
  return state, state_shardings


def build(cfg: FinetuneConfig, bert_config: model_lib.BertConfig, pretrained: dict,
          num_labels: int, mesh: jax.sharding.Mesh, num_train_steps: int,
          head: dict | None = None, teacher: distill.TeacherModel | None = None) -> Setup:
  """Task model on `mesh` from the checkpoint's (NumPy) `pretrained` params.

  `head` ({"classifier": {...}} NumPy) replaces the fresh task head. Leaves the
  checkpoint does not provide are initialised (seed `cfg.seed`) and trained
  even under LoRA.
  """
  task = tasks_lib.get(cfg.task)
  # The PEFT method's modules (adapters, prefixes) in the model; none for the others.
  bert_config = bert_config.replace(**peft.model_options(cfg.peft_method, cfg.adapter_size,
                                                         cfg.prefix_length))
  model = task.model(bert_config, num_labels)
  init_key, lora_key, dropout_key = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
  params, shardings, boxed, loaded = _load_params(
      cfg, model, bert_config, mesh, {**pretrained, **(head or {})}, init_key)
  trainable, boxed_trainable, frozen, frozen_shardings = _split_trained(
      cfg, mesh, params, shardings, boxed, loaded, lora_key)
  schedule = optim.make_schedule(learning_rate=cfg.learning_rate,
                                 warmup_steps=int(cfg.warmup_fraction * num_train_steps),
                                 total_steps=num_train_steps)
  tx = optim.make_optimizer(schedule, weight_decay=cfg.weight_decay,
                            grad_clip_norm=cfg.grad_clip_norm)
  state, state_shardings = _init_state(tx, mesh, trainable, boxed_trainable, dropout_key)

  lora_scale = (cfg.lora_alpha / cfg.effective_lora_rank if cfg.effective_lora_rank > 0
                else 0.0)
  batch_sharding = partitioning.batch_sharding(mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  train = jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                        task=task if teacher is None else teacher.objective,
                        lora_scale=lora_scale),
      in_shardings=(state_shardings, frozen_shardings if teacher is None else (
          frozen_shardings, teacher.shardings), batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=0)
  predict = jax.jit(
      functools.partial(predict_step, model=model, task=task, lora_scale=lora_scale),
      in_shardings=(state_shardings.params, frozen_shardings, batch_sharding),
      out_shardings=replicated)
  rules = partitioning.DEFAULT_RULES
  return Setup(model=model, bert_config=bert_config, mesh=mesh, task=task, state=state,
               frozen=frozen, loaded=loaded, lora_scale=lora_scale,
               train=partitioning.in_mesh(train, mesh, rules),
               predict=partitioning.in_mesh(predict, mesh, rules), schedule=schedule,
               num_train_steps=num_train_steps, teacher=teacher,
               trainable_count=tree_lib.count_params(state.params),
               total_count=tree_lib.count_params(params) + tree_lib.count_params(
                   trainable.get("lora", {})))


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
  return bucketing.bucket_widths(bucketing.lengths_of(arrays["attention_mask"]),
                                 arrays["input_ids"].shape[1], length_buckets)


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


def _to_device(setup: Setup, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  return partitioning.host_to_device(_local_rows(batch), setup.mesh)


def _eval_plan(arrays: dict[str, np.ndarray], batch_size: int, length_buckets: int):
  return bucketing.eval_plan(bucketing.lengths_of(arrays["attention_mask"]),
                             _widths(arrays, length_buckets), batch_size)


def _one_batch_per_width(setup: Setup, arrays: dict[str, np.ndarray], plan,
                         batch_size: int) -> list[dict[str, jax.Array]]:
  """A device batch of each width of `plan` (an eval plan of `arrays`; for precompiling)."""
  full = arrays["input_ids"].shape[1]
  first = {}
  for width, idx in plan:
    first.setdefault(width, idx)
  return [_to_device(setup, _pad_rows(bucketing.take(arrays, idx, width, full), batch_size))
          for width, idx in first.items()]


def predict_all(setup: Setup, trainable, data: EncodedData, batch_size: int, *,
                per_token: bool = False, length_buckets: int = 1) -> Any:
  """Outputs of `predict_step` for every row of `data`, in input order (NumPy; a pytree
  when the task predicts several arrays per row). Rows are run in length buckets;
  `per_token` outputs ([B, width, ...]) come back at full max_seq_length width."""
  keys = batch_lib.INPUT_KEYS
  arrays = {k: data.arrays[k] for k in keys}
  n, full = arrays["input_ids"].shape[:2]  # [N, L] (multiple choice: [N, L, candidates])
  plan = _eval_plan(arrays, batch_size, length_buckets)
  setup.precompile([("predict", (trainable, setup.frozen, b))
                    for b in _one_batch_per_width(setup, arrays, plan, batch_size)])
  indices, outs = [], []
  for width, idx in plan:
    rows = bucketing.take(arrays, idx, width, full)
    batch = _to_device(setup, _pad_rows(rows, batch_size))
    outs.append(jax.tree.map(lambda x, m=len(idx): np.asarray(x)[:m], jax.device_get(
        setup.step("predict", trainable, setup.frozen, batch))))
    indices.append(idx)
  return jax.tree.map(
      lambda *parts: bucketing.scatter_outputs(zip(indices, parts), n, full, per_token), *outs)


# ----------------------------------------------------------------------------- evaluation


def evaluate(setup: Setup, trainable, data: EncodedData, text: TextSide, label_list,
             batch_size: int, length_buckets: int = 1):
  """(per-example predictions, metrics, report table) of the model on labelled `data`."""
  outputs = predict_all(setup, trainable, data, batch_size,
                        per_token=setup.task.per_token_outputs, length_buckets=length_buckets)
  predictions = text.decode(data, outputs, label_list)
  metrics, table = setup.task.score(text.references(data), predictions, label_list)
  return predictions, metrics, table


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


@dataclasses.dataclass
class Files:
  """The run's encoded files (None where not given) and its label names."""
  label_list: list[str]
  train: EncodedData | None
  evaluation: EncodedData | None
  to_predict: EncodedData | None
  distill_inputs: dict[str, np.ndarray] | None = None  # --distill_file's model inputs


def _load_checkpoint(cfg: FinetuneConfig, text: TextSide):
  """(BertConfig, NumPy params, tokenizer, load report) of `cfg.init_from`, checked
  against each other and against `cfg.max_seq_length`."""
  bert_config, pretrained, report = interop.load_hf_with_report(cfg.init_from, dtype=cfg.dtype)
  if cfg.student_layers:
    bert_config, pretrained = distill.select_layers(bert_config, pretrained, cfg.student_layers,
                                                    f"init_from={cfg.init_from}")
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
  return bert_config, pretrained, tokenizer, report


def _log_load_report(report: interop.LoadReport, setup: Setup) -> None:
  """The checkpoint's load report, once the task head is settled: a head that the task
  took from the checkpoint (`head_from_hf`) is used, so it is said so, not listed among
  the ignored keys."""
  head = setup.task.head_name
  if any(path[0] == head for path in setup.loaded):
    report = dataclasses.replace(
        report, ignored=tuple(k for k in report.ignored if k.split(".")[0] != head))
    logging.info("%s\n  task head %s: loaded from the checkpoint", report, head)
  else:
    logging.info("%s", report)


def _read_files(cfg: FinetuneConfig, text: TextSide, tokenizer, checkpoint_labels) -> Files:
  """Reads and encodes the train, eval and predict files that `cfg` names."""
  def encode(path, items):
    encoded = text.encode(path, items, tokenizer, label_list, cfg.max_seq_length)
    line, high = text.unk_report(encoded, tokenizer)  # a line per file; loud when high
    if jax.process_index() == 0:
      print(("warning: " if high else "") + line, flush=True)
      if high:
        logging.warning("%s", line)
    return encoded

  train_items = text.read(cfg.train_file, True) if cfg.train_file else None
  label_list = _label_list(cfg, text, train_items, checkpoint_labels)
  return Files(
      label_list=label_list,
      train=encode(cfg.train_file, train_items) if train_items else None,
      evaluation=(encode(cfg.eval_file, text.read(cfg.eval_file, True)) if cfg.eval_file
                  else None),
      to_predict=(encode(cfg.predict_file, text.read(cfg.predict_file, False))
                  if cfg.predict_file else None),
      distill_inputs=(distill.unlabelled_arrays(encode(
          cfg.distill_file, text.read(cfg.distill_file, False))) if cfg.distill_file else None))


def _setup_for(cfg: FinetuneConfig, mesh: jax.sharding.Mesh, bert_config, pretrained: dict,
               checkpoint_labels, files: Files, cache_dir: str | None):
  """`build` for the run: the checkpoint's task head when it has one for these labels
  (and an adapters / prefix export's added leaves), the batch widths that pay for their
  compilation, and as many steps as the train file's epochs take. Returns (the run's
  config with those widths and PEFT sizes, Setup, the width costs, cache counts before)."""
  task = tasks_lib.get(cfg.task)
  head = None
  if task.head_matches(checkpoint_labels, files.label_list):
    head = task.head_from_hf(interop.read_state_dict(cfg.init_from), len(files.label_list),
                             bert_config.hidden_size)
  if files.train is None and head is None:
    raise ValueError(f"{cfg.init_from}: no task head for {cfg.task} with labels "
                     f"{files.label_list}; evaluating or predicting without a train_file "
                     "needs a fine-tuned checkpoint (e.g. OUT/best_model of an earlier run)")
  extras, sizes = peft.extras_of_checkpoint(cfg.init_from, cfg.peft_method, bert_config)
  if extras:  # an adapters / prefix export: its added leaves load with the encoder, its sizes
    head = tree_lib.unflatten({**tree_lib.flatten(head or {}), **tree_lib.flatten(extras)})
    cfg = dataclasses.replace(cfg, **sizes)
  # --length_buckets=0: as many widths as pay for their compilation (bucket_cost.py).
  buckets, costs = bucket_cost.plan(
      cfg, bert_config, files.train.arrays["attention_mask"] if files.train else None,
      files.evaluation.arrays["attention_mask"] if files.evaluation else None, cache_dir)
  cfg = dataclasses.replace(cfg, length_buckets=buckets)
  hits_before = compilation_cache.hits_and_misses()
  total_steps = (sum(epoch_steps(a, cfg.batch_size, cfg.length_buckets) for a in (
      files.train.arrays, files.distill_inputs) if a is not None) * cfg.num_epochs
                 if files.train else 1)
  teacher = None
  if cfg.teacher:
    def place(model, config, source):  # every leaf is loaded: the key draws nothing
      params, shardings, _, loaded = _load_params(cfg, model, config, mesh, source,
                                                  jax.random.PRNGKey(cfg.seed))
      return params, shardings, loaded
    teacher = distill.load_teacher(cfg, files.label_list, bert_config, place)
  setup = build(cfg, bert_config, {k: v for k, v in pretrained.items() if k == "bert"},
                max(len(files.label_list), 1), mesh, total_steps, head, teacher)
  if jax.process_index() == 0:
    print(f"peft={cfg.peft_method}: trainable parameters {setup.trainable_count:,} of "
          f"{setup.total_count:,} ({100.0 * setup.trainable_count / setup.total_count:.2f}%)",
          flush=True)
  return cfg, setup, costs, hits_before


def _record_compilation(results: dict, cfg: FinetuneConfig, setup: Setup, costs,
                        hits_before, cache_dir: str | None) -> None:
  """Compile seconds of every batch width (train and eval; cache loads included) into
  the results, and the measured cost per shape for the next run's width choice."""
  results.update(compile_seconds=setup.compile_seconds, length_buckets=cfg.length_buckets,
                 compilation_cache_dir=cache_dir)
  hits, misses = (b - a for a, b in zip(hits_before, compilation_cache.hits_and_misses()))
  bucket_cost.record_run(costs, setup._cache, setup.compile_seconds,  # pylint: disable=protected-access
                         cold=cache_dir is not None and misses > 0 and hits == 0,
                         steps=setup.num_train_steps if results["train_steps"] else 0)


def run(cfg: FinetuneConfig, text: TextSide, mesh: jax.sharding.Mesh | None = None) -> dict:
  """Fine-tunes (or, without train_file, evaluates / predicts); returns the results
  written to eval_results.json (`history` holds every epoch's eval metrics). `text`
  is the task's text side (`make_text_task` of the text package); `mesh` the devices to
  run on (default: every device, laid out as `cfg.mesh_shape`), as `train.build` takes
  one for pretraining."""
  cfg.validate()
  cfg = cfg.with_task_defaults()
  cache_dir = compilation_cache.configure(cfg.compilation_cache_dir)
  mesh = partitioning.make_mesh(cfg.mesh_shape) if mesh is None else mesh
  for name in ("batch_size", "eval_batch_size"):
    partitioning.check_batch_fits_mesh(f"{name}={getattr(cfg, name)}", getattr(cfg, name), mesh)
  bert_config, pretrained, tokenizer, report = _load_checkpoint(cfg, text)
  checkpoint_labels = finetune_export.checkpoint_labels(cfg.init_from)
  files = _read_files(cfg, text, tokenizer, checkpoint_labels)
  cfg, setup, costs, hits_before = _setup_for(cfg, mesh, bert_config, pretrained,
                                              checkpoint_labels, files, cache_dir)
  _log_load_report(report, setup)

  os.makedirs(cfg.output_dir, exist_ok=True)
  # A finished run's results must not survive into a new run that then fails.
  results_path = os.path.join(cfg.output_dir, "eval_results.json")
  if jax.process_index() == 0 and os.path.exists(results_path):
    os.remove(results_path)
  _write_skipped_rows(cfg, text, files)
  best_dir = os.path.join(cfg.output_dir, BEST_MODEL_DIR)

  def save(params):
    save_model(best_dir, cfg, setup.bert_config, setup.merged_params(params), files.label_list,
               lambda d: text.export_tokenizer(tokenizer, d, bert_config.max_position_embeddings),
               text.meta())

  history, train_loss = [], None
  if files.train is not None:
    history, best, train_loss = _train(cfg, setup, text, files, save)
  elif files.evaluation is not None:
    best = Best(None, 0, setup.state.params, *evaluate(
        setup, setup.state.params, files.evaluation, text, files.label_list,
        cfg.eval_batch_size, cfg.length_buckets))
  else:
    best = Best(None, 0, setup.state.params, None, {}, "")
  results = _results(cfg, setup, files, best, history, train_loss)
  _record_compilation(results, cfg, setup, costs, hits_before, cache_dir)
  if files.train is not None:
    results["best_model_dir"] = best_dir
  results.update(_write_outputs(cfg, setup, text, files, best))
  if jax.process_index() == 0:
    fileio.write_json_atomic(results_path, {**results, "history": history}, indent=1)
  return {**results, "history": history}


def _write_skipped_rows(cfg: FinetuneConfig, text: TextSide, files: Files) -> None:
  """skipped_rows.json: per file, the rows left out of training (still scored), each
  with its id, place and reason (the text side's warning names the first few)."""
  skipped = {data.path: text.skipped_rows(data) for data in (files.train, files.evaluation)
             if data is not None and data.labelled}
  skipped = {path: rows for path, rows in skipped.items() if rows}
  path = os.path.join(cfg.output_dir, "skipped_rows.json")
  if jax.process_index() == 0:
    if skipped:
      fileio.write_json_atomic(path, skipped, indent=1)
    elif os.path.exists(path):
      os.remove(path)  # an earlier run's list


def _results(cfg: FinetuneConfig, setup: Setup, files: Files, best: Best, history: list[dict],
             train_loss: float | None) -> dict:
  """What eval_results.json reports besides the history and the files written."""
  train = files.train
  chosen = files.train is None or files.evaluation is not None  # train-only: no best epoch
  results = dict(task=cfg.task, best_epoch=best.epoch,
                 metric_for_best=cfg.best_metric if chosen else None,
                 **distill.results(setup.teacher, cfg),
                 # A scorer's words (QA's "qa_metric": "cmrc") as they are, the numbers as eval_*.
                 **{k if isinstance(v, str) else f"eval_{k}": v for k, v in best.metrics.items()},
                 num_train_examples=len(train) if train else 0,
                 num_eval_examples=len(files.evaluation) if files.evaluation else 0,
                 trainable_parameters=setup.trainable_count,
                 total_parameters=setup.total_count, peft=cfg.peft_method,
                 lora_rank=cfg.effective_lora_rank,
                 train_steps=setup.num_train_steps if train else 0)
  if train_loss is not None:
    results["train_loss"] = train_loss
    # Training rows (QA: windows) per second of training, compilation included, as
    # transformers' Trainer counts its train_samples_per_second.
    results["train_runtime"] = sum(h["train_seconds"] for h in history)
    results["train_samples_per_second"] = (len(train.arrays["input_ids"]) * cfg.num_epochs
                                           / results["train_runtime"])
  return results


def _write_outputs(cfg: FinetuneConfig, setup: Setup, text: TextSide, files: Files,
                   best: Best) -> dict:
  """The prediction files and the report table (process 0 writes); returns their names
  for eval_results.json."""
  written = {}
  if files.to_predict is not None:
    predictions = text.decode(files.to_predict, predict_all(
        setup, best.params, files.to_predict, cfg.eval_batch_size,
        per_token=setup.task.per_token_outputs, length_buckets=cfg.length_buckets),
        files.label_list)
    if jax.process_index() == 0:
      written["predictions_file"] = text.write_predictions(
          os.path.join(cfg.output_dir, "predictions"), files.to_predict, predictions,
          files.label_list)
  if jax.process_index() == 0 and files.evaluation is not None:
    written["eval_predictions_file"] = text.write_predictions(
        os.path.join(cfg.output_dir, "eval_predictions"), files.evaluation, best.predictions,
        files.label_list)
    fileio.write_text_atomic(os.path.join(cfg.output_dir, "eval_report.txt"),
                             best.table + "\n")
  return written


def _precompile(cfg: FinetuneConfig, setup: Setup, files: Files) -> None:
  """Every shape of the run at once: the train widths and the eval widths."""
  state = setup.state
  jobs = [("train", (state, setup.train_frozen, b)) for arrays in (
      files.train.arrays, files.distill_inputs) if arrays is not None
          for b in _one_batch_per_width(
              setup, arrays, _eval_plan(arrays, cfg.batch_size, cfg.length_buckets),
              cfg.batch_size)]
  if files.evaluation is not None:
    inputs = {k: files.evaluation.arrays[k] for k in batch_lib.INPUT_KEYS}
    jobs += [("predict", (state.params, setup.frozen, b)) for b in _one_batch_per_width(
        setup, inputs, _eval_plan(inputs, cfg.eval_batch_size, cfg.length_buckets),
        cfg.eval_batch_size)]
  setup.precompile(jobs)


def _train_epoch(cfg: FinetuneConfig, setup: Setup, state: FinetuneState, files: Files,
                 epoch: int, clock: tuple[int, float]) -> tuple[FinetuneState, list, int]:
  """One epoch's steps; `clock` is (steps so far, the run's start time). Returns (state,
  the steps' losses (device arrays), steps so far)."""
  step, start = clock
  total_steps = setup.num_train_steps
  losses = []
  for batch in distill.mixed_batches(train_batches, files.train.arrays, files.distill_inputs,
                                     cfg.batch_size, cfg.seed, epoch, cfg.length_buckets):
    state, metrics = setup.step("train", state, setup.train_frozen, _to_device(setup, batch))
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
  return state, losses, step


def _train(cfg: FinetuneConfig, setup: Setup, text: TextSide, files: Files,
           save: Callable[[Any], None]) -> tuple[list[dict], Best, float]:
  """The epochs: steps, then an evaluation; the best epoch's model passed to `save`
  (without an eval file: no evaluation, the last epoch's model)."""
  state = setup.state
  history, best = [], None
  step, start = 0, time.perf_counter()
  last_epoch_loss = None
  rows = len(files.train.arrays["input_ids"])  # every training row once per epoch
  for epoch in range(1, cfg.num_epochs + 1):
    epoch_start = time.perf_counter()
    if epoch == 1:  # in the first epoch's time, as its compilations were before
      _precompile(cfg, setup, files)
    state, losses, step = _train_epoch(cfg, setup, state, files, epoch, (step, start))
    last_epoch_loss = float(np.mean(jax.device_get(losses)))  # waits for the epoch's steps
    # The epoch's training time (its compilations included, its evaluation not): what
    # transformers' Trainer reports as train_runtime when it does not evaluate.
    train_seconds = time.perf_counter() - epoch_start
    if not math.isfinite(last_epoch_loss):
      raise FloatingPointError(f"non-finite training loss in epoch {epoch}")
    record = dict(epoch=epoch, step=step, train_loss=last_epoch_loss,
                  train_seconds=train_seconds, train_samples_per_second=rows / train_seconds)
    if files.evaluation is None:
      history.append(record)
      _say(f"epoch {epoch}: train loss {last_epoch_loss:.4f}")
      continue
    predictions, metrics, table = evaluate(setup, state.params, files.evaluation, text,
                                           files.label_list, cfg.eval_batch_size,
                                           cfg.length_buckets)
    history.append({**record, **metrics})
    value = metrics[cfg.best_metric]
    improved = best is None or value > best.value
    if jax.process_index() == 0:
      print(f"epoch {epoch}: train loss {last_epoch_loss:.4f} | " + " | ".join(
          f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
          + (" | best so far" if improved else ""),
            flush=True)
    if improved:
      # A copy: the state's buffers are donated to the next step.
      kept = jax.tree.map(jnp.copy, state.params)
      best = Best(value, epoch, kept, predictions, metrics, table)
      save(kept)
  if files.evaluation is None:
    # Train-only: nothing to choose the best epoch on; the last one is the model.
    best = Best(None, cfg.num_epochs, state.params, None, {}, "")
    save(state.params)
    _say(f"no eval_file: trained {cfg.num_epochs} epoch(s) without evaluation; best_model is "
         "the last epoch's model (no best-epoch selection)")
  return history, best, last_epoch_loss


def _say(line: str) -> None:
  if jax.process_index() == 0:
    print(line, flush=True)
