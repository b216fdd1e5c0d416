"""Preemption: a SIGTERM (or the distributed runtime's preemption notice) becomes a
checkpoint at the next step boundary (`checkpointing.manager.make_step_hook`), then `Preempted`."""
from __future__ import annotations

import signal
import threading

import jax


class Preempted(Exception):
  """Raised at the step boundary after the preemption checkpoint is committed."""

  def __init__(self, step: int, directory: str):
    super().__init__(f"preempted: checkpoint of step {step} saved in {directory}")
    self.step = step
    self.directory = directory


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

  def reached(self, step: int) -> bool:
    if self._sync:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self._flag.is_set()
