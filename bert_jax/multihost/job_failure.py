"""One failure ends the whole job: every process of a multi-process run exits promptly.

jax's distributed runtime notices a process only when it stops sending heartbeats.
A process whose Python code raises keeps heartbeating (a C++ thread) while it sits in
jax's shutdown barrier at exit, waiting for peers that are busy or blocked on it, so
without help the job hangs until that barrier times out (300 s by default, and the
nodes stay held). Here, once a process has joined a job (`start`, called by
`bert_jax.multihost.distributed.initialize`):

- `fail_job(status, reason)`: a failing process writes `reason` into the coordination
  service's key-value store under its index and leaves with `os._exit(status)`, never
  entering the shutdown barrier. Process 0 hosts the store, so it first waits a few
  seconds for the others to read it.
- A watchdog thread in every process reads the store once per `poll_s`. When another
  process has failed it prints which and why and leaves with STOPPED_BY_PEER; when the
  store cannot be reached (process 0 is gone) it says so and leaves likewise.
- A process that vanishes without a word (SIGKILL, the out-of-memory killer, a lost
  node) is noticed by the runtime's own heartbeat check after `failure_timeout_s`: it
  aborts the others with a message naming the unhealthy task.
- An uncaught exception outside the launchers' wrapper (`launch/cli.py`) goes through
  `sys.excepthook`, which reports it the same way.
- A normal exit first waits, the watchdog still on guard, until every process has
  finished; only then does jax's shutdown barrier run, which all processes reach.

Test hook: `BERT_JAX_TEST_FAIL=PROCESS:PHASE[:STEP[:pause]]` makes `test_failure_point`
raise `InjectedFailure` in that process (or, with `pause`, stop there for good, for a
test to kill it); the pretraining loop calls it as phase `step` after each step's
checkpoint. For tests of failure handling only; never set it otherwise.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time

# Exit status of a process stopped because another process of its job failed.
STOPPED_BY_PEER = 3

_PREFIX = "bert_jax/job/"
_FAILED = _PREFIX + "failed/"
_ACK = _PREFIX + "ack/"
_DONE = _PREFIX + "done/"

_watchdog: "_Watchdog | None" = None


def _flush() -> None:
  """Before os._exit: the output out, and no orphaned worker processes (a data pool)
  printing broken-pipe tracebacks after this process is gone."""
  import multiprocessing  # pylint: disable=import-outside-toplevel
  for child in multiprocessing.active_children():
    child.terminate()
  logging.shutdown()  # flushes absl's handler too
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass


def _say(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def _call_with_timeout(fn, timeout_s: float) -> bool:
  """Runs `fn` in a thread; True if it returned in time without raising. An RPC to a
  coordinator that is gone must not keep a failing process alive."""
  ok = []

  def target():
    try:
      fn()
      ok.append(True)
    except Exception:  # pylint: disable=broad-except
      pass

  t = threading.Thread(target=target, daemon=True)
  t.start()
  t.join(timeout_s)
  return bool(ok)


class _Watchdog:
  """Polls the job's failure keys; leaves the process when another one failed."""

  def __init__(self, client, process_id: int, num_processes: int, poll_s: float,
               grace_s: float):
    self.client = client
    self.process_id = process_id
    self.num_processes = num_processes
    self.poll_s = poll_s
    self.grace_s = grace_s
    self.failing = False
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="bert_jax-job-watchdog",
                                    daemon=True)

  def entries(self, prefix: str) -> dict[int, str]:
    """{process index: value} of the keys under `prefix` (raises if the store is gone)."""
    return {int(k.rsplit("/", 1)[1]): v for k, v in self.client.key_value_dir_get(prefix)}

  def _run(self) -> None:
    while not self._stop.wait(self.poll_s):
      try:
        failed = self.entries(_FAILED)
      except Exception as e:  # pylint: disable=broad-except
        if self._stop.is_set() or self.failing:
          return
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _say(f"error: process {self.process_id} of {self.num_processes}: lost the job's "
             f"coordination service (process 0 has probably stopped): {first}; stopping")
        _flush()
        os._exit(STOPPED_BY_PEER)
      failed.pop(self.process_id, None)
      if failed and not self.failing:
        self.stop_for(failed)

  def stop_for(self, failed: dict[int, str]) -> None:
    """Says which other processes failed and why, and leaves with STOPPED_BY_PEER."""
    _call_with_timeout(
        lambda: self.client.key_value_set(f"{_ACK}{self.process_id}", "1"), 5.0)
    for index, reason in sorted(failed.items()):
      _say(f"error: process {index} of {self.num_processes} failed: {reason}")
    _say(f"error: stopping process {self.process_id} because process {min(failed)} failed")
    _flush()
    os._exit(STOPPED_BY_PEER)

  def start(self) -> None:
    self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    if self._thread.is_alive() and threading.current_thread() is not self._thread:
      self._thread.join(max(1.0, 2 * self.poll_s))

  def wait_for_all_done(self) -> None:
    """At a normal exit: done, then wait until every process is (the watchdog still
    ends this process if another one fails meanwhile)."""
    if not _call_with_timeout(
        lambda: self.client.key_value_set(f"{_DONE}{self.process_id}", "1"), 30.0):
      return
    while not self._stop.is_set():
      try:
        if len(self.entries(_DONE)) >= self.num_processes:
          return
      except Exception:  # pylint: disable=broad-except
        return  # the store is gone: nothing left to wait for
      time.sleep(0.2)


def start(client, process_id: int, num_processes: int, *, poll_s: float = 1.0,
          grace_s: float = 10.0) -> None:
  """Guards this process of a job joined through `client` (jax's distributed client):
  the watchdog, the excepthook and the exit protocol described above."""
  global _watchdog
  if _watchdog is not None or num_processes <= 1:
    return
  _watchdog = _Watchdog(client, process_id, num_processes, poll_s, grace_s)
  _watchdog.start()
  previous_hook = sys.excepthook

  def excepthook(kind, value, tb):
    if not issubclass(kind, KeyboardInterrupt):
      stop_if_a_peer_failed()
    previous_hook(kind, value, tb)
    if issubclass(kind, KeyboardInterrupt):
      fail_job(130, "interrupted (KeyboardInterrupt)")
    fail_job(1, describe(value))

  sys.excepthook = excepthook
  # Registered after jax's own exit handler, so it runs before jax's shutdown barrier.
  atexit.register(_at_exit)


def stop_if_a_peer_failed() -> None:
  """Called with an unexpected error in hand: when another process of the job has already
  failed, the error is almost surely its consequence (a collective whose peer has left
  fails before the watchdog's next poll), so this process stops as the watchdog would
  (the peer's reason, STOPPED_BY_PEER, no traceback; never returns). Returns otherwise."""
  w = _watchdog
  if w is None or w.failing:
    return
  try:
    failed = w.entries(_FAILED)
  except Exception:  # pylint: disable=broad-except
    return
  failed.pop(w.process_id, None)
  if failed:
    w.stop_for(failed)


def active() -> bool:
  """Whether this process is part of a multi-process job guarded here."""
  return _watchdog is not None


def describe(error: BaseException) -> str:
  """`Type: first line of the message`, short enough for one log line."""
  text = str(error).strip()
  first = text.splitlines()[0] if text else ""
  first = first if len(first) <= 500 else first[:497] + "..."
  return f"{type(error).__name__}: {first}" if first else type(error).__name__


def fail_job(status: int, reason: str) -> None:
  """Ends this process with `status` (never returns), telling the job why first.

  The caller has already printed its own message. Outside a multi-process job this is
  `os._exit(status)` after flushing the output.
  """
  w = _watchdog
  if w is None:
    _flush()
    os._exit(status)
  w.failing = True
  try:
    earlier = {i: r for i, r in w.entries(_FAILED).items() if i != w.process_id}
  except Exception:  # pylint: disable=broad-except
    earlier = {}
  for index, other in sorted(earlier.items()):
    _say(f"error: (process {index} had failed before: {other})")
  _call_with_timeout(lambda: w.client.key_value_set(f"{_FAILED}{w.process_id}", reason), 5.0)
  if w.process_id == 0:
    # The store dies with this process: give the others a moment to read the reason.
    deadline = time.monotonic() + w.grace_s
    while time.monotonic() < deadline:
      try:
        told = set(w.entries(_ACK)) | set(w.entries(_FAILED))
      except Exception:  # pylint: disable=broad-except
        break
      if told >= set(range(1, w.num_processes)):
        break
      time.sleep(0.1)
  _flush()
  os._exit(status)


def _at_exit() -> None:
  w = _watchdog
  if w is None or w.failing:
    return
  w.wait_for_all_done()
  w.stop()


class InjectedFailure(RuntimeError):
  """Raised by the BERT_JAX_TEST_FAIL test hook."""


def test_failure_point(phase: str, step: int | None = None) -> None:
  """Raises InjectedFailure if BERT_JAX_TEST_FAIL names this process, `phase` (and
  `step`). A test hook: lets the tests fail one process of a job at a chosen point."""
  spec = os.environ.get("BERT_JAX_TEST_FAIL")
  if not spec:
    return
  parts = spec.split(":")
  if len(parts) not in (2, 3, 4) or parts[3:] not in ([], ["pause"]):
    raise ValueError(f"BERT_JAX_TEST_FAIL={spec!r}: expected PROCESS:PHASE[:STEP[:pause]]")
  import jax  # pylint: disable=import-outside-toplevel
  if int(parts[0]) != jax.process_index() or parts[1] != phase:
    return
  if len(parts) >= 3 and (step is None or int(parts[2]) != step):
    return
  where = phase if step is None else f"{phase} {step}"
  if parts[3:] == ["pause"]:
    print(f"BERT_JAX_TEST_FAIL: process {jax.process_index()} paused at {where}", flush=True)
    while True:
      time.sleep(60)
  print(f"BERT_JAX_TEST_FAIL: raising in process {jax.process_index()} at {where} "
        f"(unix time {time.time():.3f})", flush=True)
  raise InjectedFailure(f"test failure injected at {where}")


def test_step_hook(step: int, state, host) -> None:
  """A train-loop step hook: the test hook's `step` phase, after the step's checkpoint."""
  del state, host
  test_failure_point("step", step)
