"""BERT pretraining: train state, pure train / eval steps, the set-up and the loop.

`train_and_evaluate(config, workdir, source)` composes small pieces: `build` (validate,
mesh, model, optimizer, abstract state, compiled steps: a `Setup`, shared with the
benchmark and the tests; the fine-tuning loop's `build` / `Setup` are its twins), the
data `source` it is handed (`bert_jax.batch.PretrainingSource`), the `HostState` that a
checkpoint carries besides the arrays (the data position, the metrics window, the
unigram counts: one `get_state` / `set_state`), and `train_loop` (step, hooks, eval;
reporting in `progress.py`; `step_hooks` run after every step, e.g. to save).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax import batch as batch_lib
from bert_jax.checkpointing import manager as checkpoint_lib
from bert_jax.distillation import loop as distill_lib
from bert_jax.multihost import distributed
from bert_jax import fileio
from bert_jax import flops as flops_lib
from bert_jax.multihost import job_failure
from bert_jax import metrics as metrics_lib
from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import partitioning
from bert_jax.multihost import preemption as preemption_lib
from bert_jax import progress as progress_lib
from bert_jax import tree as tree_lib

Batch = Mapping[str, jax.Array]
# The model inputs of packed rows (batch.PACKED_KEYS less instance_weights).
_PACKED_MODEL_KEYS = ("position_ids", "instance_ids", "cls_positions")


def num_instances(batch: Batch) -> jax.Array:
  """Real NSP instances in a batch: its rows, or the weighted slots of packed rows."""
  if "instance_weights" in batch:
    return jnp.sum(batch["instance_weights"].astype(jnp.float32))
  return jnp.asarray(batch["next_sentence_labels"].shape[0], jnp.float32)


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. `rng` is the run's base dropout key; the
  key of step s is fold_in(rng, s), so a resumed run draws the same dropout."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


# ---------------------------------------------------------------------------
# Config checks and construction


def model_config_from(config: ml_collections.ConfigDict) -> model_lib.BertConfig:
  return model_lib.BertConfig(**config.model.to_dict())


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Cheap consistency checks that need no devices; messages name the field."""
  positive = ("global_batch_size", "num_micro_batches", "num_train_steps", "max_seq_length",
              "max_predictions_per_seq", "log_every_steps", "eval_every_steps",
              "num_eval_steps", "eval_batch_size")
  for name in positive:
    if int(config[name]) <= 0:
      raise ValueError(f"config.{name}={config[name]}: must be positive")
  if config.global_batch_size % config.num_micro_batches:
    raise ValueError(
        f"config.global_batch_size={config.global_batch_size} is not divisible by "
        f"config.num_micro_batches={config.num_micro_batches}")
  if config.max_seq_length > config.model.max_position_embeddings:
    raise ValueError(
        f"config.max_seq_length={config.max_seq_length} exceeds "
        f"config.model.max_position_embeddings={config.model.max_position_embeddings}")
  if config.model.get("sliding_window", 0) > config.max_seq_length:
    raise ValueError(
        f"config.model.sliding_window={config.model.sliding_window} exceeds "
        f"config.max_seq_length={config.max_seq_length}: every layer would be global")
  if config.max_predictions_per_seq > config.max_seq_length:
    raise ValueError(
        f"config.max_predictions_per_seq={config.max_predictions_per_seq} exceeds "
        f"config.max_seq_length={config.max_seq_length}")
  for name in ("global_batch_size", "eval_batch_size"):
    distributed.check_divisible(f"config.{name}", int(config[name]))
  model_config_from(config)  # BertConfig validates its own fields
  checkpoint_lib.check_config(config)


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  return partitioning.make_mesh(tuple(config.mesh_shape))


def check_batches_fit_mesh(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Each micro-batch (and eval batch) must split evenly over the data-parallel
  devices; said here, before anything compiles."""
  micro = config.global_batch_size // config.num_micro_batches
  partitioning.check_batch_fits_mesh(
      f"config.global_batch_size={config.global_batch_size} with config.num_micro_batches="
      f"{config.num_micro_batches} (micro-batches of {micro} sequences)", micro, mesh)
  partitioning.check_batch_fits_mesh(f"config.eval_batch_size={config.eval_batch_size}",
                                     config.eval_batch_size, mesh)


def create_train_state(config: ml_collections.ConfigDict, model: model_lib.BertForPreTraining,
                       tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
                       ) -> tuple[TrainState, TrainState]:
  """(state, shardings). The state is traced abstractly, its shardings derived from
  the parameters' logical axes (optimizer moments mirror them), and the init is
  jitted straight into those shardings: no full copy on any one device."""
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  return partitioning.create_sharded(_state_initializer(config, model, tx), mesh, rules,
                                     jax.random.PRNGKey(config.seed))


def abstract_train_state(config: ml_collections.ConfigDict, model: model_lib.BertForPreTraining,
                         tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
                         ) -> tuple[TrainState, TrainState]:
  """(abstract state, shardings), touching no device memory: ShapeDtypeStructs that
  carry the shardings `create_train_state` would place its arrays on. The restore
  target of checkpoints, so a restore never first builds a throw-away state."""
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  with partitioning.axis_rules(mesh, rules):
    boxed = jax.eval_shape(_state_initializer(config, model, tx), jax.random.PRNGKey(config.seed))
    shardings = partitioning.shardings_for(boxed, mesh, rules)
  return partitioning.abstract_of(flax.linen.unbox(boxed), shardings), shardings


def _state_initializer(config, model, tx) -> Callable[[jax.Array], TrainState]:
  """rng -> the initial TrainState (parameters still boxed with their logical axes)."""
  inputs = model_lib.dummy_inputs(model.config, batch_size=1, seq_len=config.max_seq_length,
                                  num_predictions=config.max_predictions_per_seq)

  def init_fn(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init(params_rng, **inputs, deterministic=True)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=dropout_rng)

  return init_fn


# ---------------------------------------------------------------------------
# Loss and steps


def pretraining_losses(mlm_logits: jax.Array, nsp_logits: jax.Array,
                       batch: Batch) -> dict[str, jax.Array]:
  """Summed (not averaged) float32 losses and hit counts of one batch.

  Sums let micro-batches and eval batches combine exactly; divide by
  `mlm_weight` / `num_sequences` for means. Packed batches: nsp_logits [B, K, 2]
  against next_sentence_labels [B, K], slots weighted by instance_weights, and
  `num_sequences` counts the real instances.
  """
  mlm_logits = mlm_logits.astype(jnp.float32)
  weights = batch["masked_lm_weights"].astype(jnp.float32)
  ids = batch["masked_lm_ids"]
  mlm_ce = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, ids)
  sums = dict(
      mlm_loss_sum=jnp.sum(mlm_ce * weights),
      mlm_correct=jnp.sum((jnp.argmax(mlm_logits, -1) == ids) * weights),
      mlm_weight=jnp.sum(weights),
      num_sequences=num_instances(batch),
  )
  if nsp_logits is None:  # MLM-only model (no next-sentence head): the NSP terms are 0
    return {**sums, "nsp_loss_sum": jnp.zeros((), jnp.float32),
            "nsp_correct": jnp.zeros((), jnp.float32)}
  nsp_logits = nsp_logits.astype(jnp.float32)
  nsp_labels = batch["next_sentence_labels"]
  nsp_ce = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, nsp_labels)
  nsp_weights = batch.get("instance_weights")
  nsp_weights = (jnp.ones(nsp_labels.shape, jnp.float32) if nsp_weights is None
                 else nsp_weights.astype(jnp.float32))
  return {**sums, "nsp_loss_sum": jnp.sum(nsp_ce * nsp_weights),
          "nsp_correct": jnp.sum((jnp.argmax(nsp_logits, -1) == nsp_labels) * nsp_weights)}


def _apply(model, params, batch, *, deterministic, rng=None):
  packed = {k: batch[k] for k in _PACKED_MODEL_KEYS if k in batch}
  return model.apply(
      {"params": params}, batch["input_ids"], batch["token_type_ids"],
      batch["attention_mask"], batch["masked_lm_positions"], deterministic=deterministic,
      rngs=None if rng is None else {"dropout": rng}, **packed)


def train_step(state: TrainState, batch: Batch, teacher: distill_lib.TeacherArg | None = None,
               *, model: model_lib.BertForPreTraining, tx: optax.GradientTransformation,
               schedule: optax.Schedule, num_micro_batches: int = 1,
               micro_sharding: Callable[[jax.Array], jax.Array] | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the global batch (a pure function; jit it).

  Loss = MLM cross-entropy averaged over real predictions (masked_lm_weights) +
  NSP cross-entropy averaged over instances (rows, or the real instances of packed
  rows), both over the *global* batch even
  when it is accumulated over `num_micro_batches`. With a `teacher`, the weighted
  distillation loss against that frozen teacher (`distillation.loop`).
  """
  distill = None if teacher is None else teacher.run
  rng = jax.random.fold_in(state.rng, state.step)
  # Global denominators first, so the micro-batch gradients simply add up.
  num_predictions = jnp.maximum(jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)), 1.0)
  num_sequences = jnp.maximum(num_instances(batch), 1.0)

  counts = distill_lib.global_counts(batch, num_sequences, num_predictions)

  def loss_fn(params, micro, micro_rng):
    if distill is not None:
      return distill_lib.micro_loss(distill, model, params, teacher.params, micro, micro_rng,
                                    counts, pretraining_losses)
    mlm_logits, nsp_logits = _apply(model, params, micro, deterministic=False, rng=micro_rng)
    sums = pretraining_losses(mlm_logits, nsp_logits, micro)
    loss = sums["mlm_loss_sum"] / num_predictions + sums["nsp_loss_sum"] / num_sequences
    return loss, sums

  micro_batches = optim.split_micro_batches(batch, num_micro_batches, micro_sharding)
  rngs = jax.random.split(rng, num_micro_batches)
  grads, sums = optim.accumulate_gradients(loss_fn, state.params, micro_batches, rngs)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  mlm_loss = sums["mlm_loss_sum"] / num_predictions
  nsp_loss = sums["nsp_loss_sum"] / num_sequences
  metrics = dict(
      loss=mlm_loss + nsp_loss,
      mlm_loss=mlm_loss,
      mlm_accuracy=sums["mlm_correct"] / num_predictions,
      nsp_loss=nsp_loss,
      nsp_accuracy=sums["nsp_correct"] / num_sequences,
      grad_norm=optax.tree.norm(grads),
      learning_rate=jnp.asarray(schedule(state.step), jnp.float32),
      # Counts for the progress reporter's rates (useful work, not rows x L).
      **{progress_lib.INSTANCES_KEY: num_instances(batch),
         progress_lib.REAL_TOKENS_KEY: jnp.sum(batch["attention_mask"].astype(jnp.float32))},
  )
  if distill is not None:
    metrics.update(distill_lib.step_metrics(distill, sums, mlm_loss, nsp_loss))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def eval_step(params: Any, batch: Batch, *, model: model_lib.BertForPreTraining
              ) -> dict[str, jax.Array]:
  """Summed losses and hit counts of one held-out batch (no dropout)."""
  mlm_logits, nsp_logits = _apply(model, params, batch, deterministic=True)
  return pretraining_losses(mlm_logits, nsp_logits, batch)


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
  """Jitted steps bound to a model, optimizer and mesh. Calls enter the mesh and
  logical rules, which the model's sharding annotations need when tracing."""
  train: Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]
  eval: Callable[[Any, Batch], dict[str, jax.Array]]


def compile_steps(config: ml_collections.ConfigDict, model: model_lib.BertForPreTraining,
                  tx: optax.GradientTransformation, schedule: optax.Schedule,
                  mesh: jax.sharding.Mesh, state_shardings: TrainState,
                  distill: distill_lib.DistillRun | None = None) -> CompiledSteps:
  """With `distill`, the jitted step also takes the teacher's parameters (frozen: an
  argument, not state); `train(state, batch)` binds them."""
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  batch_sharding = partitioning.batch_sharding(mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # [M, B/M, ...] micro-batches: rows over the data-parallel axes, M unsharded.
  micro_spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, ("data", "fsdp")))
  micro_sharding = functools.partial(jax.lax.with_sharding_constraint, shardings=micro_spec)

  train = jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                        num_micro_batches=config.num_micro_batches,
                        micro_sharding=micro_sharding),
      in_shardings=(state_shardings, batch_sharding) + (
          () if distill is None else (distill.arg_shardings(),)),
      out_shardings=(state_shardings, replicated),
      donate_argnums=0)
  if distill is not None:
    train = functools.partial(_with_teacher, train, distill.arg)
  evaluate = jax.jit(functools.partial(eval_step, model=model),
                     in_shardings=(state_shardings.params, batch_sharding),
                     out_shardings=replicated)

  return CompiledSteps(train=partitioning.in_mesh(train, mesh, rules),
                       eval=partitioning.in_mesh(evaluate, mesh, rules))


def _with_teacher(jitted, teacher, state, batch):
  return jitted(state, batch, teacher)


@dataclasses.dataclass(frozen=True)
class Setup:
  """A pretraining run ready to start (`build` makes it; the loop, the benchmark and the
  tests share it): the mesh, model, optimizer, the abstract train state (the restore
  target) with its shardings, and the compiled steps. `init_state()` builds a fresh
  state."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: model_lib.BertForPreTraining
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: TrainState
  shardings: TrainState
  steps: CompiledSteps
  distill: distill_lib.DistillRun | None = None   # the teacher (config.distill)

  def init_state(self) -> TrainState:
    return create_train_state(self.config, self.model, self.tx, self.mesh)[0]


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None) -> Setup:
  """Validates `config` (before anything compiles: messages name the field), builds
  the mesh (or takes `mesh`), model, optimizer and abstract state, and jits the steps."""
  validate_config(config)
  mesh = make_mesh(config) if mesh is None else mesh
  check_batches_fit_mesh(config, mesh)
  model = model_lib.BertForPreTraining(model_config_from(config))
  tx, schedule = optim.optimizer_from_config(config)
  abstract, shardings = abstract_train_state(config, model, tx, mesh)
  distill = distill_lib.prepare(config, mesh, model.config,
                                tuple(tuple(r) for r in config.logical_axis_rules))
  steps = compile_steps(config, model, tx, schedule, mesh, shardings, distill)
  return Setup(config=config, mesh=mesh, model=model, tx=tx, schedule=schedule,
               abstract_state=abstract, shardings=shardings, steps=steps, distill=distill)


# ---------------------------------------------------------------------------
# Data


def check_vocab(config: ml_collections.ConfigDict, source: batch_lib.PretrainingSource) -> None:
  """The data's token ids must fit the model's embedding table."""
  data_vocab = source.vocab_size
  if data_vocab is not None and data_vocab > config.model.vocab_size:
    raise ValueError(
        f"{source.description} was tokenized with a vocabulary of {data_vocab} ids, but "
        f"config.model.vocab_size={config.model.vocab_size}; set --config.model.vocab_size="
        f"{data_vocab} (or more, e.g. rounded up to a multiple of 128)")


# ---------------------------------------------------------------------------
# Loop


class NonFiniteLossError(FloatingPointError):
  pass


@dataclasses.dataclass
class HostState:
  """What a checkpoint carries besides the arrays: the train iterator (its position),
  the metrics window not yet logged and, on text, the unigram baseline's counts.

  `get_state()` is {"data": this process's data position, "loop": {"metrics_window",
  "unigram_train_counts"}}; the checkpoint keeps "data" per process (its data item)
  and "loop" in its meta item, and `set_state` puts back what `get_state` gave.
  """
  train_iter: Iterator
  accumulator: metrics_lib.MeanAccumulator = dataclasses.field(
      default_factory=metrics_lib.MeanAccumulator)
  unigram: metrics_lib.UnigramBaseline | None = None

  def get_state(self) -> dict[str, Any]:
    counts = None if self.unigram is None else self.unigram.train_counts.tolist()
    return {"data": self.train_iter.get_state(),
            "loop": {"metrics_window": self.accumulator.get_state(),
                     "unigram_train_counts": counts}}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self.train_iter.set_state(state["data"])
    loop = state.get("loop") or {}
    self.accumulator.set_state(loop.get("metrics_window") or [])
    if self.unigram is not None and loop.get("unigram_train_counts") is not None:
      self.unigram.train_counts[:] = np.asarray(loop["unigram_train_counts"], np.int64)

  def next_batch(self) -> dict[str, np.ndarray]:
    batch = next(self.train_iter)
    if self.unigram is not None:
      self.unigram.add_train(batch)
    return batch


def evaluate(setup: Setup, params: Any, eval_iter: Iterator,
             unigram: metrics_lib.UnigramBaseline | None = None) -> dict[str, float]:
  """Eval metrics over up to `config.num_eval_steps` held-out batches (exact pooled means)."""
  totals: dict[str, float] = {}
  seen = 0
  for batch in eval_iter:
    if seen == setup.config.num_eval_steps:
      break
    if unigram is not None:
      unigram.add_eval(batch)
    sums = jax.device_get(setup.steps.eval(params, partitioning.host_to_device(
        batch_lib.pretraining_arrays(batch), setup.mesh)))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
    seen += 1
  if not seen:
    raise ValueError("the eval split yielded no batch: it holds fewer sequences than "
                     "config.eval_batch_size")
  return metrics_lib.summarise_eval(totals)


def _check_finite(step: int, loss: jax.Array) -> None:
  value = float(loss)
  if not math.isfinite(value):
    raise NonFiniteLossError(f"non-finite loss {value} at step {step}; stopping the run")


def _reporter(setup: Setup, writer: metrics_lib.MetricsWriter, params: Any
              ) -> progress_lib.ProgressReporter:
  """The progress reporter, with the FLOPs it needs for MFU (logged once)."""
  config = setup.config
  flops = flops_lib.train_flops_per_sequence(
      setup.model.config, config.max_seq_length, config.max_predictions_per_seq)
  peak, peak_source = flops_lib.system_peak_flops(list(setup.mesh.devices.flat),
                                                  config.model.dtype)
  logging.info("model: %s parameters; %.3g training FLOPs/sequence; peak %s (%s)",
               f"{tree_lib.count_params(params):,}", flops,
               "unknown" if peak is None else f"{peak:.3g} FLOP/s", peak_source)
  return progress_lib.ProgressReporter(
      writer, total_steps=int(config.num_train_steps),
      global_batch_size=config.global_batch_size, seq_len=config.max_seq_length,
      flops_per_sequence=flops, peak_flops=peak, printing=jax.process_index() == 0)


def train_loop(setup: Setup, workdir: str, *, state: TrainState, host: HostState,
               make_eval_iter: Callable[[], Iterator],
               step_hooks: Sequence[Callable[[int, TrainState, HostState], None]] = (),
               ) -> tuple[TrainState, dict[str, float]]:
  """Runs from `state.step` to `config.num_train_steps`; returns (state, last eval).

  Every `log_every_steps` a progress line and a metrics.jsonl record; every
  `eval_every_steps` (and at the end) an evaluation. `step_hooks(step, state, host)`
  run after each step with the step just completed, once its metrics record and
  evaluation are written (so a checkpoint of step s comes after every record of
  steps <= s). `host` holds the batches and the metrics window not yet logged (a
  resumed run passes the one it restored). A non-finite loss raises
  `NonFiniteLossError` naming the step.
  """
  config = setup.config
  writer = metrics_lib.MetricsWriter(workdir, enabled=jax.process_index() == 0,
                                     tensorboard=config.write_tensorboard)
  reporter = _reporter(setup, writer, state.params)
  total = int(config.num_train_steps)
  step = int(jax.device_get(state.step))
  eval_metrics: dict[str, float] = {}
  pending: tuple[int, Any] | None = None  # (step, loss) awaiting the finiteness check
  try:
    while step < total:
      state, step_metrics = setup.steps.train(state, partitioning.host_to_device(
          batch_lib.pretraining_arrays(host.next_batch()), setup.mesh))
      step += 1
      # Check the previous step's loss while this one runs: one step stays in
      # flight, yet the run stops at (and names) the first bad step.
      if pending is not None:
        _check_finite(*pending)
      pending = (step, step_metrics["loss"])
      host.accumulator.add(step_metrics)
      reporter.step_done()
      if step == 1:
        # The first step includes compilation: time throughput from here on.
        jax.block_until_ready(step_metrics)
        _check_finite(*pending)
        logging.info("first step (compilation included) done")
        reporter.restart_window()
      if step % config.log_every_steps == 0 or step == total:
        _check_finite(*pending)
        reporter.log(step, host.accumulator.result())
      if step % config.eval_every_steps == 0 or step == total:
        eval_metrics = evaluate(setup, state.params, make_eval_iter(),
                                host.unigram if step == total else None)
        reporter.eval(step, eval_metrics)
      for hook in step_hooks:
        hook(step, state, host)
  finally:
    writer.close()
  return state, eval_metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       source: batch_lib.PretrainingSource,
                       mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
  """Pretrains per `config` on the batches of `source` (see `bert_jax.batch`; the
  launcher builds it from `config.data`, which this library never reads), writing
  metrics.jsonl, TensorBoard events, curves.png and checkpoints to `workdir`; returns
  the final eval metrics (plus the unigram baseline when trained on real data). Where
  it starts (workdir checkpoint, else `config.init_from`, else fresh) is decided in
  `checkpointing.manager.restore_or_initialize`. On SIGTERM it saves at the next step
  boundary and returns `{"preempted_at_step": step}`. `mesh`: as for `build`."""
  setup = build(config, mesh)
  os.makedirs(workdir, exist_ok=True)
  check_vocab(config, source)
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, checkpoint_lib.CHECKPOINTS_SUBDIR), keep=config.keep_checkpoints,
      keep_period=config.keep_period)
  state, start_step, host = _start(setup, checkpointer, source, workdir)
  preemption = preemption_lib.PreemptionWatcher()
  save_hook = checkpoint_lib.make_step_hook(
      checkpointer, every_steps=config.checkpoint_every_steps,
      total_steps=config.num_train_steps, preemption=preemption,
      meta_fn=lambda: {"config": json.loads(config.to_json_best_effort()),
                       "tokenizer": source.tokenizer, "data_dir": None,
                       "tokenizer_file": None, **source.checkpoint_meta,
                       "teacher": None if setup.distill is None else setup.distill.meta})
  try:
    with preemption:
      state, eval_metrics = train_loop(
          setup, workdir, state=state, host=host, make_eval_iter=source.eval_batches,
          step_hooks=(save_hook, job_failure.test_step_hook))
  except preemption_lib.Preempted as p:
    print(f"preempted: stopped after step {p.step}, checkpoint committed in {p.directory}; "
          f"run the same command to resume", flush=True)
    return {"preempted_at_step": p.step}
  finally:
    checkpointer.close()  # waits for the last asynchronous save to commit
  if start_step >= config.num_train_steps:
    # The same command again after the run finished: nothing to train; report the
    # final evaluation again rather than overwrite summary.json with nothing.
    print(f"the run is already complete (step {start_step})", flush=True)
    eval_metrics = evaluate(setup, state.params, source.eval_batches(), host.unigram)
  return _write_summary(workdir, eval_metrics, host.unigram)


def _start(setup: Setup, checkpointer: checkpoint_lib.Checkpointer,
           source: batch_lib.PretrainingSource, workdir: str
           ) -> tuple[TrainState, int, HostState]:
  """(state, its step, host state) where the run starts (see `restore_or_initialize`),
  saying which start it is; metrics.jsonl is rewound to that step."""
  config = setup.config
  start = checkpoint_lib.restore_or_initialize(
      checkpointer, abstract_state=setup.abstract_state, init_state=setup.init_state,
      init_from=config.init_from, model_config=setup.model.config)
  start_step = start.step  # read now: the first train step donates start.state's buffers
  # Text only: a unigram baseline of random ids says nothing.
  unigram = metrics_lib.UnigramBaseline(config.model.vocab_size) if source.tokenizer else None
  host = HostState(source.train_batches(), unigram=unigram)
  if start.source == "checkpoint":
    _check_same_tokenizer(start, source.tokenizer)
    distill_lib.check_resume(start.path, start.meta.get("teacher"), setup.distill)
    host.set_state(start.host_state)
    print(f"resumed from {start.path} at step {start_step}", flush=True)
  elif start.source == "init_from":
    print(f"parameters from {start.path}; optimizer, step and data start afresh", flush=True)
  else:
    print(f"fresh start: no checkpoint in {checkpointer.directory}, no config.init_from",
          flush=True)
    if setup.distill is not None and setup.distill.init_layers is not None:
      start.state = start.state.replace(params=distill_lib.init_student(
          setup.distill, start.state.params, setup.shardings.params))
      print(f"student initialised from teacher layers {list(setup.distill.init_layers)} "
            "(and its embeddings and heads)", flush=True)
  # Records of steps after the starting one belong to a run that died before its
  # next checkpoint: this run writes those steps again.
  metrics_lib.rewind_metrics(workdir, start_step, metrics_lib.METRICS_FILE)
  return start.state, start_step, host


def _check_same_tokenizer(start: checkpoint_lib.Start, tokenizer: Any) -> None:
  saved_tokenizer = start.meta.get("tokenizer")
  if saved_tokenizer != tokenizer:
    raise checkpoint_lib.IncompatibleCheckpointError(
        f"checkpoint {start.path} was trained with tokenizer {saved_tokenizer}, this run's data "
        f"with {tokenizer}: the same ids would mean other tokens. Resume with the original "
        f"data, or start a new run (another --workdir) with --config.init_from={start.path}")


def _write_summary(workdir: str, eval_metrics: Mapping[str, float],
                   unigram: metrics_lib.UnigramBaseline | None) -> dict[str, float]:
  """summary.json (and curves.png) from process 0: the final evaluation, plus the
  unigram baseline on text."""
  summary = dict(eval_metrics)
  if unigram is not None:
    summary.update(unigram.result())
  if jax.process_index() == 0:
    fileio.write_json_atomic(os.path.join(workdir, "summary.json"), summary, indent=1)
    metrics_lib.plot_curves(workdir)
  return summary
