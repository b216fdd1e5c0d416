"""One failure ends a multi-process job promptly; a restart resumes; shared data is made once.

Two real processes of `python -m launch.pretrain` on loopback (one CPU device each,
gloo collectives) share one workdir and have no data_dir, so they must prepare the
quickstart dataset there once between them (from a small corner of the standard
library, BERT_JAX_DEFAULT_CORPUS_ROOT, to stay cheap). The same job is then broken
in turn: process 1 stops with a user error while process 0 prepares the data, process
0 raises after a checkpoint, process 1 is SIGKILLed mid-run (paused by the hook after
step 6, so that the kill falls mid-run however fast the steps are). Each time every process must exit
non-zero within a bound, and the next start of the same command resumes from the
last checkpoint; the run, pieced together from these restarts, must log the same
losses as one process with 2 devices. Failures are injected with the
BERT_JAX_TEST_FAIL test hook (bert_jax/multihost/job_failure.py). Every process is killed in
the end, whatever happens.
"""
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

from tests.helpers.pretrain import pretrain_command
from tests.helpers.processes import child_env, free_port

from tests.helpers import REPO
STEPS = 10
FAILURE_TIMEOUT_S = 10
# Failure to last exit: the heartbeat timeout for a killed process, about a second for
# a process that raises; the rest is slack for a loaded 2-core machine.
BOUND_S = FAILURE_TIMEOUT_S + 30
TIMING_KEYS = {"seq_per_sec", "tokens_per_sec", "mfu"}
CORPUS_ROOT = os.path.join(sysconfig.get_paths()["stdlib"], "email")


def _command(workdir, data_dir=""):
  return pretrain_command(workdir, data_dir, num_train_steps=STEPS, log_every_steps=1,
                          eval_every_steps=STEPS, num_eval_steps=1, checkpoint_every_steps=2,
                          keep_checkpoints=2, mesh_shape="(2,1,1)")


class _Job:
  """The processes of one job; `wait` records when each exited."""

  def __init__(self, tmp_path, name, commands, devices, extra_env=None):
    env = child_env(devices)
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("BERT_JAX_TEST_FAIL", None)
    env.update(BERT_JAX_DEFAULT_CORPUS_ROOT=CORPUS_ROOT,
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / f"jax_cache_{devices}"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **(extra_env or {}))
    self.logs = [str(tmp_path / f"{name}-{i}.log") for i in range(len(commands))]
    self.procs, self.exit_times = [], [None] * len(commands)
    for command, log_path in zip(commands, self.logs):
      with open(log_path, "w") as log:
        self.procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

  def output(self, i):
    with open(self.logs[i]) as f:
      return f.read()

  def outputs(self):
    return "\n".join(f"--- process {i}:\n{self.output(i)[-4000:]}" for i in range(len(self.procs)))

  def poll(self):
    for i, p in enumerate(self.procs):
      if self.exit_times[i] is None and p.poll() is not None:
        self.exit_times[i] = time.time()
    return all(t is not None for t in self.exit_times)

  def wait(self, timeout):
    deadline = time.monotonic() + timeout
    while not self.poll():
      if time.monotonic() > deadline:
        self.kill()
        pytest.fail(f"the job did not end within {timeout} s:\n{self.outputs()}")
      time.sleep(0.05)
    return [p.returncode for p in self.procs]

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        try:
          os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
        p.wait(30)


def _two_processes(workdir, data_dir=""):
  address = f"127.0.0.1:{free_port()}"
  return [_command(workdir, data_dir) + [
      f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}",
      "--distributed_timeout_s=120", f"--failure_timeout_s={FAILURE_TIMEOUT_S}"]
          for i in range(2)]


def _injected_at(job, process):
  m = re.search(r"BERT_JAX_TEST_FAIL: raising in process \d+ at .* \(unix time ([\d.]+)\)",
                job.output(process))
  assert m, job.outputs()
  return float(m.group(1))


def _committed(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in f]


def _corpus_writes(job):
  return sum(job.output(i).count("wrote the standard-library corpus") for i in range(2))


def _preparations(job):
  return sum(job.output(i).count("prepared train and eval shards") for i in range(2))


@pytest.mark.slow
def test_any_failure_ends_the_job_and_the_same_command_resumes(tmp_path):
  workdir = str(tmp_path / "shared")
  jobs, times = [], {}
  try:
    # 1. While process 0 prepares the shared data, process 1 stops with a user error (a
    # data_dir that does not exist): one line, status 2; process 0 stops too, status 3.
    commands = _two_processes(workdir)
    commands[1].append(f"--config.data_dir={tmp_path}/missing")
    job = _Job(tmp_path, "prepare", commands, devices=1)
    jobs.append(job)
    codes = job.wait(240)
    times["user error in process 1 during data preparation"] = (
        max(job.exit_times) - min(t for t in job.exit_times))
    assert codes == [3, 2], job.outputs()
    errors = [l for l in job.output(1).splitlines() if l.startswith("error:")]
    missing = f"--config.data_dir (config.data.data_dir)='{tmp_path}/missing' does not exist"
    assert len(errors) == 1 and errors[0].startswith(f"error: {missing}; prepare one"), job.outputs()
    assert f"error: process 1 of 2 failed: {missing}" in job.output(0), job.outputs()
    assert "error: stopping process 0 because process 1 failed" in job.output(0)
    assert "Traceback" not in job.output(0) + job.output(1)

    # 2. The same command: one process prepares the data (the other waits), then
    # process 0 raises after the checkpoint of step 4.
    job = _Job(tmp_path, "step", _two_processes(workdir), devices=1,
               extra_env={"BERT_JAX_TEST_FAIL": "0:step:4"})
    jobs.append(job)
    codes = job.wait(300)
    times["raise in process 0 after step 4"] = max(job.exit_times) - _injected_at(job, 0)
    assert codes[0] == 1 and codes[1] != 0, job.outputs()
    assert "process 0 of 2 failed: InjectedFailure" in job.output(1), job.outputs()
    # The shared data is prepared to the end once by the two jobs together (process 0 of
    # job 1 may finish before the stop reaches it; else one process of this job takes
    # over while the other waits), and never by both processes of this job.
    assert _preparations(jobs[0]) + _preparations(job) == 1, job.outputs()
    assert _corpus_writes(job) <= 1, job.outputs()
    assert max(_committed(workdir)) == 4, _committed(workdir)

    # 3. The same command resumes; process 1 is SIGKILLed after step 6.
    job = _Job(tmp_path, "kill", _two_processes(workdir), devices=1,
               extra_env={"BERT_JAX_TEST_FAIL": "1:step:6:pause"})
    jobs.append(job)
    deadline = time.monotonic() + 240
    while "paused at step 6" not in job.output(1):
      assert time.monotonic() < deadline and not job.poll(), job.outputs()
      time.sleep(0.05)
    killed_at = time.time()
    os.killpg(job.procs[1].pid, signal.SIGKILL)
    codes = job.wait(120)
    times["SIGKILL of process 1 mid-run"] = max(job.exit_times) - killed_at
    assert codes[0] != 0 and codes[1] == -signal.SIGKILL, job.outputs()
    assert "resumed from" in job.output(0) and "at step 4" in job.output(0), job.outputs()
    assert _corpus_writes(job) == 0, job.outputs()
    last = max(_committed(workdir))
    assert 4 <= last < STEPS, (last, job.outputs())

    # 4. The same command again runs to the end.
    job = _Job(tmp_path, "finish", _two_processes(workdir), devices=1)
    jobs.append(job)
    assert job.wait(300) == [0, 0], job.outputs()
    assert f"at step {last}" in job.output(0), job.outputs()

    # One process with 2 devices, the data the two processes prepared.
    reference = str(tmp_path / "one")
    job = _Job(tmp_path, "one", [_command(reference, os.path.join(workdir, "data", "data"))], devices=2)
    jobs.append(job)
    assert job.wait(300) == [0], job.outputs()
  finally:
    for j in jobs:
      j.kill()
    for case, seconds in times.items():
      print(f"{case}: last process exited {seconds:.1f} s after the failure")

  for case, seconds in times.items():
    assert seconds < BOUND_S, (case, seconds)
  ours, theirs = _records(workdir), _records(reference)
  assert [r["step"] for r in ours] == [r["step"] for r in theirs]
  for a, b in zip(ours, theirs):
    assert a.keys() == b.keys()
    for k in b:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=f"step {b['step']} {k}")

