"""Several real processes on loopback form one job and train as one process would.

Each process runs `python -m launch.pretrain` with explicit coordinator flags,
CPU devices and gloo collectives; the global mesh (data=2, fsdp=2) and the
global batch are the same in every layout, so the losses and the final
parameters must match a single process with 4 devices. The 2-process job is
also preempted (SIGTERM to every process) after its first checkpoint and
restarted, so saving and restoring a checkpoint collectively is part of it.
"""
import os
import signal
import time

import numpy as np
import pytest

from tests.helpers.pretrain import pretrain_command
from tests.helpers.processes import Job, child_env, committed, free_port, records
from tests.helpers import pretrain as pretrain_testlib

STEPS = 6


def _command(workdir, data_dir):
  return pretrain_command(workdir, data_dir, num_train_steps=STEPS, log_every_steps=1,
                          eval_every_steps=3, num_eval_steps=1, checkpoint_every_steps=2,
                          mesh_shape="(2,2,1)")


def _job(tmp_path, name, workdir, data_dir, num_processes, devices):
  """`num_processes` processes of one job, `devices` CPU devices each; a restart reuses
  the compiled steps of the job's first start."""
  address = f"127.0.0.1:{free_port()}"
  extra = lambda i: ([f"--coordinator_address={address}", f"--num_processes={num_processes}",
                      f"--process_id={i}", "--distributed_timeout_s=120"]
                     if num_processes > 1 else [])
  env = child_env(devices, str(tmp_path / f"jax_cache_{num_processes}"))
  return Job(tmp_path, name, [_command(workdir, data_dir) + extra(i)
                              for i in range(num_processes)], env)


def _assert_same_run(workdir, reference_dir, label):
  ours = pretrain_testlib.read_state(os.path.join(workdir, "checkpoints", str(STEPS)))
  theirs = pretrain_testlib.read_state(os.path.join(reference_dir, "checkpoints", str(STEPS)))
  assert ours.keys() == theirs.keys()
  worst = max(float(np.max(np.abs(np.asarray(ours[k], np.float64) - theirs[k]))) for k in theirs)
  print(f"{label}: final state max abs difference from one process: {worst:.3g}")
  for k in theirs:
    np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6, err_msg=f"{label}: {k}")
  a, b = records(workdir), records(reference_dir)
  assert [r["step"] for r in a] == [r["step"] for r in b], label
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys(), label
    for k in rb:
      np.testing.assert_allclose(ra[k], rb[k], rtol=1e-5, atol=1e-6, err_msg=f"{label}: step {rb['step']} {k}")


@pytest.mark.slow
def test_two_and_four_processes_train_like_one(tmp_path):
  data_dir = pretrain_testlib.prepare_resume_corpus(str(tmp_path))
  jobs = []
  try:
    reference_dir = str(tmp_path / "one")
    reference = _job(tmp_path, "one", reference_dir, data_dir, num_processes=1, devices=4)
    jobs.append(reference)
    assert reference.wait(300) == [0], reference.output()

    # 2 processes x 2 devices, preempted after the first checkpoint, then restarted.
    two_dir = str(tmp_path / "two")
    job = _job(tmp_path, "two-a", two_dir, data_dir, num_processes=2, devices=2)
    jobs.append(job)
    deadline = time.monotonic() + 300
    while not committed(two_dir) and time.monotonic() < deadline and job.procs[0].poll() is None:
      time.sleep(0.05)
    job.signal(signal.SIGTERM)
    codes = job.wait(180)
    first = job.output(0)
    assert codes == [0, 0], first + job.output(1)
    preempted = "preempted: stopped after step" in first
    print("2-process job preempted:", preempted, "committed:", committed(two_dir))
    job = _job(tmp_path, "two-b", two_dir, data_dir, num_processes=2, devices=2)
    jobs.append(job)
    assert job.wait(300) == [0, 0], job.output(0) + job.output(1)
    if preempted:
      assert "resumed from" in job.output(0), job.output(0)
    _assert_same_run(two_dir, reference_dir, "2 processes")
    # Only process 0 writes the metrics; every process wrote its data position.
    step_dir = os.path.join(two_dir, "checkpoints", str(STEPS))
    assert sorted(n for n in os.listdir(os.path.join(step_dir, "data")) if n.startswith("process")) == [
        "process_0-of-2.json", "process_1-of-2.json"]

    four_dir = str(tmp_path / "four")
    job = _job(tmp_path, "four", four_dir, data_dir, num_processes=4, devices=1)
    jobs.append(job)
    assert job.wait(400) == [0] * 4, job.output(0)
    _assert_same_run(four_dir, reference_dir, "4 processes")
  finally:
    for j in jobs:
      j.kill()
