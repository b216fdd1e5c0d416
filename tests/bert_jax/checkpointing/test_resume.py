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
import time

import numpy as np
import pytest
from tests.helpers import pretrain as pretrain_testlib
from tests.helpers.pretrain import pretrain_command


from tests.helpers.processes import Job, child_env, committed, records
NUM_STEPS = 20


def _command(workdir, data_dir):
  # Saves at 3, 6, 9, ...: mid logging window, so the saved window matters.
  return pretrain_command(workdir, data_dir, num_train_steps=NUM_STEPS, log_every_steps=5,
                          eval_every_steps=10, checkpoint_every_steps=3, keep_checkpoints=2)


def _run(workdir, data_dir, name):
  """One `python -m launch.pretrain` on 2 CPU devices; restarts reuse the compiled steps."""
  root = os.path.dirname(workdir)
  return Job(root, name, [_command(workdir, data_dir)],
             child_env(2, os.path.join(root, "jax_cache")))


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
    if run.procs[0].poll() is not None:
      return False
    time.sleep(interval)
  return False


@pytest.mark.slow
def test_killed_again_and_again_resumes_bit_exactly(tmp_path):
  data_dir = pretrain_testlib.prepare_resume_corpus(str(tmp_path))
  reference_dir = str(tmp_path / "reference")
  chaos_dir = str(tmp_path / "chaos")
  rng = random.Random(1234)
  runs = []
  events = []
  try:
    reference = _run(reference_dir, data_dir, "reference")
    runs.append(reference)

    # 1. SIGKILL at a random moment after the first checkpoint (so that every test
    #    run resumes from a real one at least once).
    run = _run(chaos_dir, data_dir, "kill1")
    runs.append(run)
    assert _poll(run, lambda: committed(chaos_dir), 240), run.output()
    time.sleep(rng.uniform(0.0, 0.3))
    run.kill()
    events.append(("SIGKILL mid-run", committed(chaos_dir), max(_logged_steps(chaos_dir), default=0)))

    # 2. SIGKILL while a checkpoint newer than every committed one is being written.
    before = max(committed(chaos_dir), default=0)
    run = _run(chaos_dir, data_dir, "kill2")
    runs.append(run)
    # Once it has started (the previous run's partial save is deleted by then), a
    # temporary directory of a step after the last committed one.
    mid_save = _poll(run, lambda: _started(run) and any(
        int(n.split(".")[0]) > before for n in _in_progress_saves(chaos_dir)), 240)
    run.kill()
    assert mid_save, "the run ended before a save could be interrupted:\n" + run.output()
    partial = _in_progress_saves(chaos_dir)
    assert partial, "the interrupted save left no temporary directory"
    events.append(("SIGKILL mid-save", committed(chaos_dir), partial))

    # 3. SIGTERM (preemption): saves at the next step boundary and exits 0.
    before = max(committed(chaos_dir), default=0)
    run = _run(chaos_dir, data_dir, "preempt")
    runs.append(run)
    # A new committed step: this run is inside its loop (older runs' records are
    # still in metrics.jsonl until it rewinds them, so they cannot tell).
    assert _poll(run, lambda: max(committed(chaos_dir), default=0) > before, 240), run.output()
    run.signal(signal.SIGTERM)
    [rc] = run.wait(120)
    out = run.output()
    if "held-out MLM accuracy" not in out:  # SIGTERM came before the run finished
      assert rc == 0, out
      assert "preempted: stopped after step" in out, out
      # The partial save of (2) was ignored: this run resumed from a committed step.
      assert f"resumed from {chaos_dir}/checkpoints/{before} at step {before}" in out, out
    events.append(("SIGTERM", committed(chaos_dir), rc))

    # 4. To the end.
    run = _run(chaos_dir, data_dir, "final")
    runs.append(run)
    assert run.wait(240) == [0], run.output()
    final_out = run.output()
    assert reference.wait(240) == [0], reference.output()
  finally:
    for r in runs:
      r.kill()
  print("\ninterruptions (event, committed steps after it, detail):", *events, sep="\n  ")

  assert not _in_progress_saves(chaos_dir)
  assert "resumed from" in final_out
  ours = pretrain_testlib.read_state(os.path.join(chaos_dir, "checkpoints", str(NUM_STEPS)))
  theirs = pretrain_testlib.read_state(os.path.join(reference_dir, "checkpoints", str(NUM_STEPS)))
  assert ours.keys() == theirs.keys()
  different = [k for k in ours if not np.array_equal(ours[k], theirs[k])]
  assert not different, f"{len(different)} arrays differ: {different[:5]}"
  assert int(ours["step"]) == NUM_STEPS
  chaos_records, reference_records = records(chaos_dir), records(reference_dir)
  assert [r["step"] for r in chaos_records] == [5, 10, 10, 15, 20, 20]
  assert chaos_records == reference_records
