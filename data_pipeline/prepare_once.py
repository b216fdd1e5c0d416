"""Something several processes need, made by one of them: an atomic claim on the filesystem.

The processes of a multi-host job share one workdir (and the quickstart prepares its
dataset there); two writers of one file would corrupt it. The first process to create
the lock file `<directory>/.prepare.lock` (O_CREAT | O_EXCL: atomic, on NFS too) makes
the thing; the others wait until it is done. The lock records the owner's host and pid,
and the owner touches it every few seconds, so a waiter can tell an owner at work from
one that died: an owner on the same host whose pid is gone, or a lock untouched for
`stale_after_s`, is dead, and a waiter takes the claim over (the work restarts; every
writer here leaves nothing half-written under a final name). An owner that fails with
an exception releases the lock, and a waiter takes over likewise.

No jax here: `data_pipeline` never imports it. In a multi-process job, a failure of the
owner also stops the waiters through the job's own failure handling
(`bert_jax/multihost/job_failure.py`), which is faster than any of these timeouts.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import threading
import time
from typing import Callable, TypeVar

LOCK_NAME = ".prepare.lock"
T = TypeVar("T")


class PreparationWaitError(RuntimeError):
  """Waited too long for another process to finish preparing a shared directory."""


def _owner_alive(owner: dict) -> bool | None:
  """True / False for an owner on this host (its pid checked), None elsewhere."""
  if owner.get("host") != socket.gethostname():
    return None
  try:
    os.kill(int(owner["pid"]), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, KeyError, ValueError, TypeError):
    return True
  return True


def _read_owner(lock: str) -> dict | None:
  try:
    with open(lock) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}  # being written this instant: an owner without details yet


@contextlib.contextmanager
def _holding(lock: str, refresh_s: float):
  """Holds the created lock: touches it every `refresh_s` s, removes it at the end."""
  stop = threading.Event()

  def refresh():
    while not stop.wait(refresh_s):
      try:
        os.utime(lock)
      except OSError:
        return

  thread = threading.Thread(target=refresh, name="prepare_once-refresh", daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join(refresh_s + 1)
    with contextlib.suppress(FileNotFoundError):
      os.remove(lock)


def _try_claim(lock: str) -> bool:
  try:
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}, f)
  return True


@dataclasses.dataclass(frozen=True)
class Timing:
  """How long `prepare_once` waits, and how often it looks."""
  wait_timeout_s: float = 3600.0  # a waiter gives up (PreparationWaitError) after this
  stale_after_s: float = 300.0    # a lock untouched this long belongs to a dead owner
  refresh_s: float = 5.0          # the owner touches its lock this often
  poll_s: float = 0.5             # a waiter looks again this often


def prepare_once(directory: str, is_done: Callable[[], bool], make: Callable[[], T],
                 result: Callable[[], T], *, what: str = "the data",
                 timing: Timing = Timing(), log: Callable[[str], None] | None = None) -> T:
  """`make()` in exactly one of the processes that call this for `directory` at once.

  `is_done()` says whether a finished result is already there (then `result()` is
  returned without waiting); the process that wins the claim returns `make()`, the
  others `result()` once `is_done()`. A waiter raises PreparationWaitError after
  `timing.wait_timeout_s` seconds of waiting on an owner that is still at work; an owner
  that died (same host, pid gone; or its lock untouched for `timing.stale_after_s` s) is
  replaced.
  """
  log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
  os.makedirs(directory, exist_ok=True)
  lock = os.path.join(directory, LOCK_NAME)
  start = time.monotonic()
  said_waiting = False
  seen_mtime, seen_at = None, time.monotonic()
  while True:
    if is_done():
      return result()
    if _try_claim(lock):
      with _holding(lock, timing.refresh_s):
        # Done between our check and our claim (the owner finished, released): reuse.
        if is_done():
          return result()
        return make()
    owner = _read_owner(lock)
    if owner is None:
      continue  # released this instant: claim again
    try:
      mtime = os.stat(lock).st_mtime
    except FileNotFoundError:
      continue
    now = time.monotonic()
    if mtime != seen_mtime:
      seen_mtime, seen_at = mtime, now
    who = f"process {owner.get('pid', '?')} on host {owner.get('host', '?')}"
    reason = _dead_owner(owner, lock, now - seen_at, timing.stale_after_s)
    if reason:
      log(f"{what}: {who} began preparing {directory} but {reason}; taking over")
      # Remove only the lock judged dead, not one a faster waiter just took.
      if _read_owner(lock) == owner:
        with contextlib.suppress(FileNotFoundError):
          os.remove(lock)
      continue
    if now - start > timing.wait_timeout_s:
      raise PreparationWaitError(
          f"waited {timing.wait_timeout_s:.0f} s for {who} to prepare {what} in {directory} "
          f"(lock {lock}); if no process is preparing it, remove the lock")
    if not said_waiting:
      log(f"{what}: {who} is preparing {directory}; waiting for it")
      said_waiting = True
    time.sleep(timing.poll_s)


def _dead_owner(owner: dict, lock: str, untouched_s: float, stale_after_s: float) -> str | None:
  """Why the lock's owner counts as dead (its pid gone, or its lock stale), or None."""
  alive = _owner_alive(owner) if owner else True
  if alive is False:
    return "has exited"
  if untouched_s > stale_after_s:
    return f"has not touched {lock} for {untouched_s:.0f} s"
  return None
