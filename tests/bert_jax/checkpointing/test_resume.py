"""Exact resume of a real `python -m launch.pretrain` process killed at random points.

One workdir is interrupted again and again -- SIGKILL while training, SIGKILL while
a checkpoint is being written, SIGTERM (preemption) -- and restarted each time; an
uninterrupted run of the same config runs beside it. Both must end with the same
train state, bit for bit, and the same metrics.jsonl values (timings aside).
Tiny model (1 layer, H64), seq 32, batch 8, 20 steps, 2 simulated CPU devices,
real prepared data (the grain loader's state is part of what must resume).
"""
import json
import os
import random
import signal
import subprocess
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from tests.helpers import pretrain as pretrain_testlib
from tests.helpers.pretrain import pretrain_command

from bert_jax import tree as tree_lib

from tests.helpers import REPO
NUM_STEPS = 20
TIMING_KEYS = {"seq_per_sec", "tokens_per_sec", "mfu"}


def _command(workdir, data_dir):
  # Saves at 3, 6, 9, ...: mid logging window, so the saved window matters.
  return pretrain_command(workdir, data_dir, num_train_steps=NUM_STEPS, log_every_steps=5,
                          eval_every_steps=10, checkpoint_every_steps=3, keep_checkpoints=2)


def _env(cache_dir):
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  env["JAX_PLATFORMS"] = "cpu"
  # Restarts reuse the first runs' compiled steps (the same executables, so bit
  # exactness is untouched): compilation is most of a restart's time.
  env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  env.pop("PYTEST_CURRENT_TEST", None)
  return env


class _Run:
  """One child process in its own process group, output to a log file."""

  def __init__(self, workdir, data_dir, name):
    self.log_path = os.path.join(os.path.dirname(workdir), f"{name}.log")
    self._log = open(self.log_path, "w")
    cache_dir = os.path.join(os.path.dirname(workdir), "jax_cache")
    self.proc = subprocess.Popen(_command(workdir, data_dir), cwd=REPO, env=_env(cache_dir),
                                 stdout=self._log, stderr=subprocess.STDOUT,
                                 start_new_session=True)

  def signal(self, sig):
    try:
      os.killpg(self.proc.pid, sig)
    except ProcessLookupError:
      pass

  def wait(self, timeout):
    try:
      return self.proc.wait(timeout)
    finally:
      self._log.close()

  def output(self):
    with open(self.log_path) as f:
      return f.read()

  def kill(self):
    self.signal(signal.SIGKILL)
    self.proc.wait(30)
    self._log.close()


def _committed(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _in_progress_saves(workdir):
  d = os.path.join(workdir, "checkpoints")
  return [n for n in os.listdir(d) if "tmp" in n] if os.path.isdir(d) else []


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  steps = []
  with open(path) as f:
    for line in f:
      try:
        steps.append(json.loads(line)["step"])
      except ValueError:
        pass
  return steps


def _started(run):
  out = run.output()
  return "resumed from" in out or "fresh start" in out


def _poll(run, predicate, timeout, interval=0.001):
  """Waits until predicate() holds while the run is alive; False if it exited or timed out."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return True
    if run.proc.poll() is not None:
      return False
    time.sleep(interval)
  return False


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in f]


@pytest.mark.slow
def test_killed_again_and_again_resumes_bit_exactly(tmp_path):
  data_dir = pretrain_testlib.prepare_resume_corpus(str(tmp_path))
  reference_dir = str(tmp_path / "reference")
  chaos_dir = str(tmp_path / "chaos")
  rng = random.Random(1234)
  runs = []
  events = []
  try:
    reference = _Run(reference_dir, data_dir, "reference")
    runs.append(reference)

    # 1. SIGKILL at a random moment after the first checkpoint (so that every test
    #    run resumes from a real one at least once).
    run = _Run(chaos_dir, data_dir, "kill1")
    runs.append(run)
    assert _poll(run, lambda: _committed(chaos_dir), 240), run.output()
    time.sleep(rng.uniform(0.0, 0.3))
    run.kill()
    events.append(("SIGKILL mid-run", _committed(chaos_dir), max(_logged_steps(chaos_dir), default=0)))

    # 2. SIGKILL while a checkpoint newer than every committed one is being written.
    before = max(_committed(chaos_dir), default=0)
    run = _Run(chaos_dir, data_dir, "kill2")
    runs.append(run)
    # Once it has started (the previous run's partial save is deleted by then), a
    # temporary directory of a step after the last committed one.
    mid_save = _poll(run, lambda: _started(run) and any(
        int(n.split(".")[0]) > before for n in _in_progress_saves(chaos_dir)), 240)
    run.kill()
    assert mid_save, "the run ended before a save could be interrupted:\n" + run.output()
    partial = _in_progress_saves(chaos_dir)
    assert partial, "the interrupted save left no temporary directory"
    events.append(("SIGKILL mid-save", _committed(chaos_dir), partial))

    # 3. SIGTERM (preemption): saves at the next step boundary and exits 0.
    before = max(_committed(chaos_dir), default=0)
    run = _Run(chaos_dir, data_dir, "preempt")
    runs.append(run)
    # A new committed step: this run is inside its loop (older runs' records are
    # still in metrics.jsonl until it rewinds them, so they cannot tell).
    assert _poll(run, lambda: max(_committed(chaos_dir), default=0) > before, 240), run.output()
    run.signal(signal.SIGTERM)
    rc = run.wait(120)
    out = run.output()
    if "held-out MLM accuracy" not in out:  # SIGTERM came before the run finished
      assert rc == 0, out
      assert "preempted: stopped after step" in out, out
      # The partial save of (2) was ignored: this run resumed from a committed step.
      assert f"resumed from {chaos_dir}/checkpoints/{before} at step {before}" in out, out
    events.append(("SIGTERM", _committed(chaos_dir), rc))

    # 4. To the end.
    run = _Run(chaos_dir, data_dir, "final")
    runs.append(run)
    assert run.wait(240) == 0, run.output()
    final_out = run.output()
    assert reference.wait(240) == 0, reference.output()
  finally:
    for r in runs:
      r.signal(signal.SIGKILL)
      if r.proc.poll() is None:
        r.proc.wait(30)
  print("\ninterruptions (event, committed steps after it, detail):", *events, sep="\n  ")

  assert not _in_progress_saves(chaos_dir)
  assert "resumed from" in final_out
  ours = pretrain_testlib.read_state(os.path.join(chaos_dir, "checkpoints", str(NUM_STEPS)))
  theirs = pretrain_testlib.read_state(os.path.join(reference_dir, "checkpoints", str(NUM_STEPS)))
  assert ours.keys() == theirs.keys()
  different = [k for k in ours if not np.array_equal(ours[k], theirs[k])]
  assert not different, f"{len(different)} arrays differ: {different[:5]}"
  assert int(ours["step"]) == NUM_STEPS
  chaos_records, reference_records = _records(chaos_dir), _records(reference_dir)
  assert [r["step"] for r in chaos_records] == [5, 10, 10, 15, 20, 20]
  assert chaos_records == reference_records
