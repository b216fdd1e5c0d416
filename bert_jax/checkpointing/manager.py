"""Checkpoints of whole runs: Orbax, asynchronous, exact to resume, restorable on any mesh.

This module: the checkpoint manager (`Checkpointer`), the start-up precedence and the
loop's save hook. Reading parameters from elsewhere (`config.init_from`, exports):
`init_from.py`; SIGTERM handling: `preemption.py`; rewinding metrics.jsonl: `metrics.py`.

Where a run starts -- the one place this order is decided (`restore_or_initialize`):

  1. the latest *complete* checkpoint in WORKDIR/checkpoints: the whole run resumes
     (parameters, optimizer state, step, RNG, the data iterator's position and the
     metrics window), so the run continues as if it had never stopped;
  2. else `config.init_from`: one of our checkpoints (a workdir, its checkpoints/
     directory or one step directory) or a Hugging Face BERT directory (config.json +
     model.safetensors / pytorch_model.bin). Parameters only: the optimizer, step and
     data start afresh;
  3. else a fresh initialisation from `config.seed`.

The on-disk layout (three Orbax items per step), the errors and the tree comparison:
`layout.py`.

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
import time
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath

from bert_jax.checkpointing import init_from as init_from_lib
from bert_jax.checkpointing import layout
# The layout and errors that callers of the manager meet, under the manager's name too.
from bert_jax.checkpointing.layout import (CHECKPOINTS_SUBDIR, DAMAGED_SUBDIR, CheckpointError,
                                           IncompatibleCheckpointError)  # noqa: F401
from bert_jax.multihost import preemption as preemption_lib
from bert_jax import tree as tree_lib


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
        item_handlers={layout.STATE: ocp.StandardCheckpointHandler(),
                       layout.META: ocp.JsonCheckpointHandler(),
                       layout.DATA: HostJsonHandler()})

  def steps(self) -> list[int]:
    """Committed steps, oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any, *, meta: Mapping[str, Any],
           data_state: Mapping[str, Any] | None) -> None:
    """Starts saving `state` (a TrainState of global arrays) as step `step`."""
    meta = to_jsonable({**meta, "format_version": layout.FORMAT_VERSION, "step": int(step),
                        "process_count": jax.process_count()})
    self._manager.save(step, args=ocp.args.Composite(**{
        layout.STATE: ocp.args.StandardSave(state),
        layout.META: ocp.args.JsonSave(meta),
        layout.DATA: HostJsonSave(to_jsonable(data_state)),
    }), force=True)

  def wait(self) -> None:
    """Blocks until the pending save (if any) is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises IncompatibleCheckpointError listing every array whose shape or dtype
    differs from `abstract_state` (or that one side lacks)."""
    saved = tree_lib.flatten_with_names(self._manager.item_metadata(step)[layout.STATE])
    lines = layout.mismatches(saved, tree_lib.flatten_with_names(abstract_state),
                              check_dtype=True)
    if lines:
      raise layout.incompatible_error(
          f"checkpoint {self.step_path(step)}", lines,
          "Resume with the config that made it (its meta item holds it), use another "
          "--workdir, or start a new run from its parameters with --config.init_from.")

  def restore(self, step: int, abstract_state: Any) -> Restored:
    """Step `step` onto the shardings carried by `abstract_state` (any mesh)."""
    self.check_compatible(step, abstract_state)
    items = self._manager.restore(step, args=ocp.args.Composite(**{
        layout.STATE: ocp.args.StandardRestore(abstract_state),
        layout.META: ocp.args.JsonRestore(),
        layout.DATA: HostJsonRestore(),
    }))
    meta = dict(items[layout.META])
    saved_processes = meta.get("process_count")
    if saved_processes != jax.process_count():
      raise CheckpointError(
          f"checkpoint {self.step_path(step)} was saved by {saved_processes} processes; this "
          f"run has {jax.process_count()}: the data position of each host cannot carry over")
    return Restored(step=step, path=self.step_path(step), state=items[layout.STATE],
                    meta=meta, data_state=items[layout.DATA])

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

  @property
  def host_state(self) -> dict | None:
    """The loop's host state as the step hook saved it ({"data": this process's data
    position, "loop": the meta item's "loop"}); checkpoint only."""
    if self.source != "checkpoint":
      return None
    return {"data": self.data_state, "loop": (self.meta or {}).get("loop") or {}}


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
  params, where = init_from_lib.load(init_from, model_config, abstract_state.params,
                                     state.params)
  logging.info("initialised the parameters from %s (fresh optimizer)", where)
  return Start(state=state.replace(params=params), source="init_from", path=where,
               data_state=None, meta=None)


# ---------------------------------------------------------------------------
# The loop's side


def make_step_hook(checkpointer: Checkpointer, *, every_steps: int, total_steps: int,
                   meta_fn: Callable[[], Mapping[str, Any]],
                   preemption: preemption_lib.PreemptionWatcher | None = None
                   ) -> Callable[[int, Any, Any], None]:
  """A `train_loop` step hook: saves every `every_steps`, at `total_steps` and at a
  preemption notice (then waits for the commit and raises `Preempted`).

  `meta_fn()` gives the meta item's content at that step (config, tokenizer); the host
  state the loop passes in (`get_state()` -> {"data", "loop"}) gives the data item
  (this process's data position) and the meta item's "loop" (the metrics window, ...).
  """

  def hook(step: int, state: Any, host: Any) -> None:
    preempted = preemption is not None and preemption.reached(step)
    if not (preempted or step == total_steps or (every_steps > 0 and step % every_steps == 0)):
      return
    host_state = host.get_state()
    checkpointer.save(step, state, meta={**meta_fn(), "loop": host_state["loop"]},
                      data_state=host_state["data"])
    if preempted:
      checkpointer.wait()
      raise preemption_lib.Preempted(step, checkpointer.step_path(step))

  return hook
