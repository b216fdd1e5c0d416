"""Checkpoints of whole runs: Orbax, asynchronous, exact to resume, restorable on any mesh.

Where a run starts -- the one place this order is decided (`restore_or_initialize`):

  1. the latest *complete* checkpoint in WORKDIR/checkpoints: the whole run resumes
     (parameters, optimizer state, step, RNG, the data iterator's position and the
     metrics window), so the run continues as if it had never stopped;
  2. else `config.init_from`: one of our checkpoints (a workdir, its checkpoints/
     directory or one step directory) or a Hugging Face BERT directory (config.json +
     model.safetensors / pytorch_model.bin). Parameters only: the optimizer, step and
     data start afresh;
  3. else a fresh initialisation from `config.seed`.

Layout: WORKDIR/checkpoints/<step>/ holds three Orbax items:
  state  the `TrainState` (params, opt_state, step, rng) as sharded arrays;
  meta   JSON: the config that made it, the tokenizer's identity, the data directory,
         the number of processes, and the loop's host state (the metrics window not
         yet logged, the unigram-baseline counts);
  data   JSON per process (process_I-of-N.json): that host's data-iterator state.

Orbax writes a step into a temporary directory and renames it when every item is
written, so a run killed mid-save leaves no step directory, only a temporary one
that the next start deletes. A committed checkpoint that later lost or truncated
files fails to restore: it is moved to WORKDIR/checkpoints_damaged/ with a message
naming it, and the previous checkpoint is tried. A checkpoint of another model
(shapes, vocabulary, optimizer) is an error listing every mismatched array.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

CHECKPOINTS_SUBDIR = "checkpoints"
DAMAGED_SUBDIR = "checkpoints_damaged"
FORMAT_VERSION = 1
STATE, META, DATA = "state", "meta", "data"


class CheckpointError(ValueError):
  """A checkpoint that cannot be used; the message names it."""


class IncompatibleCheckpointError(CheckpointError):
  """A checkpoint of another model shape, vocabulary or optimizer."""


class Preempted(Exception):
  """Raised at the step boundary after the preemption checkpoint is committed."""

  def __init__(self, step: int, directory: str):
    super().__init__(f"preempted: checkpoint of step {step} saved in {directory}")
    self.step = step
    self.directory = directory


def check_config(config) -> None:
  """The checkpoint fields of a run config; messages name the field."""
  if int(config.checkpoint_every_steps) < 0:
    raise ValueError(f"config.checkpoint_every_steps={config.checkpoint_every_steps}: must be "
                     ">= 0 (0: save only at the last step and on preemption)")
  if int(config.keep_checkpoints) < 1:
    raise ValueError(f"config.keep_checkpoints={config.keep_checkpoints}: must be at least 1")
  if int(config.keep_period) < 0:
    raise ValueError(f"config.keep_period={config.keep_period}: must be >= 0 (0: off)")
  if config.init_from and not os.path.isdir(config.init_from):
    raise ValueError(f"config.init_from={config.init_from!r} is not a directory (one of our "
                     "workdirs or checkpoints, or a Hugging Face BERT directory)")


# ---------------------------------------------------------------------------
# The per-process data-iterator item


class HostJsonHandler(ocp.CheckpointHandler):
  """One JSON file per process. Orbax's JsonCheckpointHandler writes on the primary
  host only, but every host iterates its own slice of the data and has its own state."""

  @staticmethod
  def _name(index: int, count: int) -> str:
    return f"process_{index}-of-{count}.json"

  def save(self, directory: epath.Path, args: "HostJsonSave"):
    path = epath.Path(directory) / self._name(jax.process_index(), jax.process_count())
    path.write_text(json.dumps(args.item))

  def restore(self, directory: epath.Path, args: "HostJsonRestore | None" = None) -> Any:
    directory = epath.Path(directory)
    path = directory / self._name(jax.process_index(), jax.process_count())
    if not path.exists():
      present = sorted(p.name for p in directory.iterdir())
      raise FileNotFoundError(
          f"{path} not found (present: {present}); a data position saved by another "
          f"number of processes cannot resume this run's {jax.process_count()}")
    return json.loads(path.read_text())

  def metadata(self, directory: epath.Path) -> None:
    return None

  def finalize(self, directory: epath.Path) -> None:
    pass

  def close(self) -> None:
    pass


@ocp.args.register_with_handler(HostJsonHandler, for_save=True)
@dataclasses.dataclass
class HostJsonSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(HostJsonHandler, for_restore=True)
@dataclasses.dataclass
class HostJsonRestore(ocp.args.CheckpointArgs):
  item: Any = None


# ---------------------------------------------------------------------------
# Trees


def _key_name(k) -> str:
  for attr in ("name", "key", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def flatten_with_names(tree: Any) -> dict[str, Any]:
  """{'params/bert/...': leaf}: one naming for TrainStates, dicts and Orbax metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def abstract_of(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying `shardings`: a restore target from any array tree."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def mismatches(saved: Mapping[str, Any], expected: Mapping[str, Any], *,
               check_dtype: bool) -> list[str]:
  """Every difference between two {name: shape/dtype-bearing leaf} tables, one line each."""
  lines = []
  for name in sorted(set(saved) | set(expected)):
    if name not in saved:
      lines.append(f"{name}: missing from the checkpoint (this run has "
                   f"{tuple(expected[name].shape)} {np.dtype(expected[name].dtype)})")
    elif name not in expected:
      lines.append(f"{name}: in the checkpoint {tuple(saved[name].shape)}, not in this run")
    else:
      s, e = saved[name], expected[name]
      if tuple(s.shape) != tuple(e.shape) or (
          check_dtype and np.dtype(s.dtype) != np.dtype(e.dtype)):
        lines.append(f"{name}: checkpoint {tuple(s.shape)} {np.dtype(s.dtype)}, this run "
                     f"{tuple(e.shape)} {np.dtype(e.dtype)}")
  return lines


def _incompatible(where: str, lines: list[str], hint: str) -> IncompatibleCheckpointError:
  shown = lines[:40]
  more = f"\n  ... and {len(lines) - 40} more" if len(lines) > 40 else ""
  return IncompatibleCheckpointError(
      f"{where} does not fit this run's model: {len(lines)} mismatched array(s):\n  "
      + "\n  ".join(shown) + more + f"\n{hint}")


def to_jsonable(value: Any) -> Any:
  """JSON round trip now: a value captured at save time (later mutation cannot leak into
  an asynchronous write) and an early TypeError for what JSON cannot hold."""
  return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------
# The manager


@dataclasses.dataclass
class Restored:
  """A restored checkpoint: the state on this run's shardings and its host-side items."""
  step: int
  path: str
  state: Any
  meta: dict
  data_state: dict | None


class Checkpointer:
  """Saves and restores whole-run checkpoints under `directory` (WORKDIR/checkpoints).

  Saves are asynchronous: `save` returns once the arrays are copied off the devices
  and the files are written in the background while training goes on. Keeps the
  last `keep` checkpoints, and every step divisible by `keep_period` (> 0) for good.
  """

  def __init__(self, directory: str, *, keep: int = 3, keep_period: int = 0,
               async_save: bool = True, read_only: bool = False):
    if keep < 1:
      raise ValueError(f"keep_checkpoints={keep}: must be at least 1")
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_period or None,
        # A save killed half-way leaves a temporary directory: delete it on start.
        cleanup_tmp_directories=not read_only, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       META: ocp.JsonCheckpointHandler(), DATA: HostJsonHandler()})

  def steps(self) -> list[int]:
    """Committed steps, oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any, *, meta: Mapping[str, Any],
           data_state: Mapping[str, Any] | None) -> None:
    """Starts saving `state` (a TrainState of global arrays) as step `step`."""
    meta = to_jsonable({**meta, "format_version": FORMAT_VERSION, "step": int(step),
                        "process_count": jax.process_count()})
    self._manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        META: ocp.args.JsonSave(meta),
        DATA: HostJsonSave(to_jsonable(data_state)),
    }), force=True)

  def wait(self) -> None:
    """Blocks until the pending save (if any) is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def read_meta(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises IncompatibleCheckpointError listing every array whose shape or dtype
    differs from `abstract_state` (or that one side lacks)."""
    saved = flatten_with_names(self._manager.item_metadata(step)[STATE])
    lines = mismatches(saved, flatten_with_names(abstract_state), check_dtype=True)
    if lines:
      raise _incompatible(
          f"checkpoint {self.step_path(step)}", lines,
          "Resume with the config that made it (its meta item holds it), use another "
          "--workdir, or start a new run from its parameters with --config.init_from.")

  def restore(self, step: int, abstract_state: Any) -> Restored:
    """Step `step` onto the shardings carried by `abstract_state` (any mesh)."""
    self.check_compatible(step, abstract_state)
    items = self._manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state),
        META: ocp.args.JsonRestore(),
        DATA: HostJsonRestore(),
    }))
    meta = dict(items[META])
    saved_processes = meta.get("process_count")
    if saved_processes != jax.process_count():
      raise CheckpointError(
          f"checkpoint {self.step_path(step)} was saved by {saved_processes} processes; this "
          f"run has {jax.process_count()}: the data position of each host cannot carry over")
    return Restored(step=step, path=self.step_path(step), state=items[STATE], meta=meta,
                    data_state=items[DATA])

  def restore_latest(self, abstract_state: Any) -> Restored | None:
    """The newest checkpoint that restores; damaged ones are reported and moved aside.

    A shape mismatch is not damage: it raises at once (never a fall-back to an older
    checkpoint of the same foreign model, never a partial load).
    """
    damaged = []
    for step in reversed(self.steps()):
      try:
        restored = self.restore(step, abstract_state)
      except IncompatibleCheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Orbax/tensorstore report a missing or truncated file as one of several
        # exception types; whatever the type, this checkpoint cannot be read.
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        logging.error("checkpoint %s is damaged and is skipped (%s)", self.step_path(step), reason)
        print(f"checkpoint {self.step_path(step)} is damaged ({reason}); moving it to "
              f"{self._damaged_dir()} and trying the previous one", flush=True)
        damaged.append(step)
        self._move_aside(step)
        continue
      if damaged:
        print(f"resuming from checkpoint {restored.path} (skipped damaged step(s) "
              f"{damaged})", flush=True)
      return restored
    if damaged:
      raise CheckpointError(
          f"every checkpoint in {self.directory} is damaged (steps {damaged}, moved to "
          f"{self._damaged_dir()}); refusing to restart the run from scratch over them: "
          f"remove {self._damaged_dir()} to start afresh, or restore a copy")
    return None

  def _damaged_dir(self) -> str:
    return os.path.join(os.path.dirname(self.directory), DAMAGED_SUBDIR)

  def _move_aside(self, step: int) -> None:
    # Out of the step namespace: otherwise the manager keeps it as the latest step
    # and this run could never save that step number again.
    if jax.process_index() == 0:
      os.makedirs(self._damaged_dir(), exist_ok=True)
      target = os.path.join(self._damaged_dir(), f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      shutil.move(self.step_path(step), target)
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint_move_aside_{step}")
    self._manager.reload()


# ---------------------------------------------------------------------------
# init_from: parameters only


def _is_step_dir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, STATE)) and os.path.basename(path.rstrip("/")).isdigit()


def resolve_our_checkpoint(path: str) -> tuple[str, int] | None:
  """(checkpoints directory, step) for a workdir, a checkpoints/ directory or a step
  directory of ours; None when `path` is none of these."""
  path = os.path.abspath(path)
  if _is_step_dir(path):
    return os.path.dirname(path), int(os.path.basename(path))
  for directory in (os.path.join(path, CHECKPOINTS_SUBDIR), path):
    if os.path.isdir(directory):
      steps = sorted(int(d) for d in os.listdir(directory) if _is_step_dir(os.path.join(directory, d)))
      if steps:
        return directory, steps[-1]
  return None


def load_params(path: str, abstract_params: Any) -> tuple[Any, str]:
  """Parameters of one of our checkpoints, placed on `abstract_params`' shardings.

  Returns (params, the step directory read). Only the `params` subtree is read: the
  optimizer state of the source run may be of another optimizer. Shapes must match.
  """
  found = resolve_our_checkpoint(path)
  if found is None:
    raise CheckpointError(f"{path}: not one of our checkpoints (no {CHECKPOINTS_SUBDIR}/<step>/"
                          f"{STATE}) and not a Hugging Face directory (no config.json)")
  directory, step = found
  step_dir = os.path.join(directory, str(step))
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    metadata = checkpointer.metadata(os.path.join(step_dir, STATE))
    saved = flatten_with_names(getattr(metadata, "item_metadata", metadata)["params"])
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"checkpoint {step_dir} cannot be read ({type(e).__name__}: {e})") from e
  lines = mismatches(saved, flatten_with_names(abstract_params), check_dtype=False)
  if lines:
    raise _incompatible(f"checkpoint {step_dir} (config.init_from)", lines,
                        "Set the model fields (--config.model.*) to those of that checkpoint.")
  target = {"params": abstract_params}
  restored = checkpointer.restore(os.path.join(step_dir, STATE), args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return restored["params"], step_dir


def load_hf_params(path: str, model_config: Any, abstract_params: Any,
                   fresh_params: Any) -> Any:
  """Parameters of a Hugging Face BERT directory on `abstract_params`' shardings.

  Its config.json must describe this run's model (every architecture field equal).
  Groups a bare BertModel lacks (the pretraining heads, the pooler) keep their fresh
  initialisation from `fresh_params`, and are named in a warning.
  """
  from bert_jax import interop  # pylint: disable=import-outside-toplevel
  runtime = {f: getattr(model_config, f) for f in
             ("dtype", "param_dtype", "attention_impl", "remat_policy", "scan_layers")}
  hf_config, params, report = interop.load_hf_with_report(path, **runtime)
  different = [f"{f}: {path} has {getattr(hf_config, f)!r}, this run {getattr(model_config, f)!r}"
               for f in interop._CONFIG_FIELDS  # pylint: disable=protected-access
               if getattr(hf_config, f) != getattr(model_config, f)
               and not f.endswith("dropout_prob")]
  if different:
    raise IncompatibleCheckpointError(
        f"{path}/config.json does not describe this run's model ({len(different)} field(s)):\n  "
        + "\n  ".join(different) + "\nSet --config.model.* to the checkpoint's values.")
  loaded = flatten_with_names(params)
  expected = flatten_with_names(abstract_params)
  lines = [line for line in mismatches(loaded, expected, check_dtype=False)
           if "missing from the checkpoint" not in line]
  if lines:
    raise _incompatible(f"{path} (config.init_from)", lines, "")
  if report.absent:
    logging.warning("%s: absent from the checkpoint, freshly initialised: %s", path,
                    ", ".join(report.absent))
    print(f"init_from {path}: {', '.join(report.absent)} absent there, freshly initialised",
          flush=True)
  fresh = flatten_with_names(fresh_params)
  shardings = flatten_with_names(jax.tree.map(lambda a: a.sharding, abstract_params))
  merged = {name: (jax.device_put(np.asarray(loaded[name], dtype=expected[name].dtype),
                                  shardings[name]) if name in loaded else fresh[name])
            for name in expected}
  treedef = jax.tree.structure(abstract_params)
  return jax.tree.unflatten(treedef, [merged[n] for n in flatten_with_names(abstract_params)])


def read_checkpoint(path: str, step: int | None = None) -> tuple[str, dict, Any]:
  """(step directory, meta, params as host NumPy arrays) of one of our checkpoints.

  `path` is a workdir, its checkpoints/ directory or a step directory; `step`
  picks one (default: the latest). Reads on the host, so a checkpoint saved on any
  mesh (or any number of hosts) loads here.
  """
  found = resolve_our_checkpoint(path)
  if found is None:
    raise CheckpointError(f"{path}: no checkpoint found (expected {CHECKPOINTS_SUBDIR}/<step>/"
                          f"{STATE})")
  directory, latest = found
  step = latest if step is None else int(step)
  step_dir = os.path.join(directory, str(step))
  if not _is_step_dir(step_dir):
    available = sorted(int(d) for d in os.listdir(directory) if _is_step_dir(os.path.join(directory, d)))
    raise CheckpointError(f"{directory}: no checkpoint of step {step}; available: {available}")
  try:
    with open(os.path.join(step_dir, META, "metadata")) as f:
      meta = json.load(f)
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(os.path.join(step_dir, STATE))
    params_meta = getattr(metadata, "item_metadata", metadata)["params"]
    target = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta)
    restored = checkpointer.restore(os.path.join(step_dir, STATE), args=ocp.args.PyTreeRestore(
        item={"params": params_meta}, restore_args={"params": target}, partial_restore=True))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"checkpoint {step_dir} cannot be read ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
  return step_dir, meta, restored["params"]


def is_hf_directory(path: str) -> bool:
  return os.path.exists(os.path.join(path, "config.json"))


# ---------------------------------------------------------------------------
# Precedence


@dataclasses.dataclass
class Start:
  """Where a run starts: the state on this run's shardings and what to resume."""
  state: Any
  source: str                 # "checkpoint" | "init_from" | "fresh"
  path: str | None            # what was read
  data_state: dict | None     # the data iterator's position (checkpoint only)
  meta: dict | None           # the checkpoint's meta item (checkpoint only)

  @property
  def step(self) -> int:
    return int(jax.device_get(self.state.step))


def restore_or_initialize(checkpointer: Checkpointer, *, abstract_state: Any,
                          init_state: Callable[[], Any], init_from: str = "",
                          model_config: Any = None) -> Start:
  """The precedence of the module docstring: checkpoint in the workdir, else
  `init_from` (parameters only), else fresh. `init_state()` builds the fresh state
  on the same shardings `abstract_state` carries."""
  restored = checkpointer.restore_latest(abstract_state)
  if restored is not None:
    logging.info("resuming from %s", restored.path)
    return Start(state=restored.state, source="checkpoint", path=restored.path,
                 data_state=restored.data_state, meta=restored.meta)
  state = init_state()
  if not init_from:
    return Start(state=state, source="fresh", path=None, data_state=None, meta=None)
  if is_hf_directory(init_from):
    params = load_hf_params(init_from, model_config, abstract_state.params, state.params)
    where = init_from
  else:
    params, where = load_params(init_from, abstract_state.params)
  logging.info("initialised the parameters from %s (fresh optimizer)", where)
  return Start(state=state.replace(params=params), source="init_from", path=where,
               data_state=None, meta=None)


# ---------------------------------------------------------------------------
# Preemption


class PreemptionWatcher:
  """Says at a step boundary whether the run was asked to stop (SIGTERM).

  One process: a SIGTERM handler sets a flag. Several processes with JAX's
  distributed runtime: its preemption service receives the signal and
  `reached_preemption_sync_point(step)` makes every host agree on the step to save.
  Use as a context manager: the previous handler is restored on exit.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    self._sync = False

  def __enter__(self):
    from jax._src import distributed  # pylint: disable=import-outside-toplevel
    self._sync = (jax.process_count() > 1
                  and getattr(distributed.global_state, "preemption_sync_manager", None) is not None)
    if not self._sync and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    # Only a flag: the step in flight finishes and the loop saves at its boundary.
    self._flag.set()
    print("SIGTERM received: saving a checkpoint at the end of this step, then exiting",
          flush=True)

  def request(self) -> None:
    """As if SIGTERM had arrived (tests, schedulers with their own notice)."""
    self._flag.set()

  def reached(self, step: int) -> bool:
    if self._sync:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self._flag.is_set()


# ---------------------------------------------------------------------------
# The loop's side


def rewind_metrics(workdir: str, step: int, filename: str = "metrics.jsonl") -> int:
  """Drops metrics records of steps after `step` (written by a run that died before
  its next checkpoint committed) and a torn last line; returns how many were dropped.
  The resumed run writes those steps again, so the file reads as one run."""
  path = os.path.join(workdir, filename)
  if jax.process_index() != 0 or not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
        keep = line.endswith("\n") and int(record["step"]) <= step
      except (ValueError, KeyError, TypeError):
        keep = False
      if keep:
        kept.append(line)
      else:
        dropped += 1
  if dropped:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return dropped


def make_step_hook(checkpointer: Checkpointer, *, every_steps: int, total_steps: int,
                   meta_fn: Callable[[], Mapping[str, Any]],
                   preemption: PreemptionWatcher | None = None
                   ) -> Callable[[int, Any, Any], None]:
  """A `train_loop` step hook: saves every `every_steps`, at `total_steps` and at a
  preemption notice (then waits for the commit and raises `Preempted`).

  `meta_fn()` gives the meta item's content at that step (config, tokenizer, loop
  state); the data position comes from the iterator the loop passes in.
  """

  def hook(step: int, state: Any, train_iter: Any) -> None:
    preempted = preemption is not None and preemption.reached(step)
    if not (preempted or step == total_steps or (every_steps > 0 and step % every_steps == 0)):
      return
    checkpointer.save(step, state, meta=meta_fn(), data_state=train_iter.get_state())
    if preempted:
      checkpointer.wait()
      raise Preempted(step, checkpointer.step_path(step))

  return hook
