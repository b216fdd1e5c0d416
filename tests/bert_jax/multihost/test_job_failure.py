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
import os
import re
import signal
import sysconfig
import time

import numpy as np
import pytest

from tests.helpers.pretrain import pretrain_command
from tests.helpers.processes import Job, child_env, committed, free_port, records

STEPS = 10
FAILURE_TIMEOUT_S = 10
# Failure to last exit: the heartbeat timeout for a killed process, about a second for
# a process that raises; the rest is slack for a loaded 2-core machine.
BOUND_S = FAILURE_TIMEOUT_S + 30
CORPUS_ROOT = os.path.join(sysconfig.get_paths()["stdlib"], "email")


def _command(workdir, data_dir=""):
  return pretrain_command(workdir, data_dir, num_train_steps=STEPS, log_every_steps=1,
                          eval_every_steps=STEPS, num_eval_steps=1, checkpoint_every_steps=2,
                          keep_checkpoints=2, mesh_shape="(2,1,1)")


def _job(tmp_path, name, commands, devices, **extra_env):
  env = child_env(devices, str(tmp_path / f"jax_cache_{devices}"),
                  BERT_JAX_DEFAULT_CORPUS_ROOT=CORPUS_ROOT, **extra_env)
  return Job(tmp_path, name, commands, env)


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
    commands[1].append(f"--config.data.data_dir={tmp_path}/missing")
    job = _job(tmp_path, "prepare", commands, devices=1)
    jobs.append(job)
    codes = job.wait(240)
    times["user error in process 1 during data preparation"] = (
        max(job.exit_times) - min(t for t in job.exit_times))
    assert codes == [3, 2], job.outputs()
    errors = [l for l in job.output(1).splitlines() if l.startswith("error:")]
    missing = f"--config.data.data_dir='{tmp_path}/missing' does not exist"
    assert len(errors) == 1 and errors[0].startswith(f"error: {missing}; prepare one"), job.outputs()
    assert f"error: process 1 of 2 failed: {missing}" in job.output(0), job.outputs()
    assert "error: stopping process 0 because process 1 failed" in job.output(0)
    assert "Traceback" not in job.output(0) + job.output(1)

    # 2. The same command: one process prepares the data (the other waits), then
    # process 0 raises after the checkpoint of step 4.
    job = _job(tmp_path, "step", _two_processes(workdir), devices=1,
               BERT_JAX_TEST_FAIL="0:step:4")
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
    assert max(committed(workdir)) == 4, committed(workdir)

    # 3. The same command resumes; process 1 is SIGKILLed after step 6.
    job = _job(tmp_path, "kill", _two_processes(workdir), devices=1,
               BERT_JAX_TEST_FAIL="1:step:6:pause")
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
    last = max(committed(workdir))
    assert 4 <= last < STEPS, (last, job.outputs())

    # 4. The same command again runs to the end.
    job = _job(tmp_path, "finish", _two_processes(workdir), devices=1)
    jobs.append(job)
    assert job.wait(300) == [0, 0], job.outputs()
    assert f"at step {last}" in job.output(0), job.outputs()

    # One process with 2 devices, the data the two processes prepared.
    reference = str(tmp_path / "one")
    job = _job(tmp_path, "one", [_command(reference, os.path.join(workdir, "data", "data"))], devices=2)
    jobs.append(job)
    assert job.wait(300) == [0], job.outputs()
  finally:
    for j in jobs:
      j.kill()
    for case, seconds in times.items():
      print(f"{case}: last process exited {seconds:.1f} s after the failure")

  for case, seconds in times.items():
    assert seconds < BOUND_S, (case, seconds)
  ours, theirs = records(workdir), records(reference)
  assert [r["step"] for r in ours] == [r["step"] for r in theirs]
  for a, b in zip(ours, theirs):
    assert a.keys() == b.keys()
    for k in b:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=f"step {b['step']} {k}")



class _Store:
  """The coordination service's key-value store, as job_failure reads and writes it."""

  def __init__(self, entries):
    self.entries = dict(entries)

  def key_value_dir_get(self, prefix):
    return [(k, v) for k, v in self.entries.items() if k.startswith(prefix)]

  def key_value_set(self, key, value):
    self.entries[key] = value


class _Exited(Exception):
  pass


def _exit(status):
  raise _Exited(status)


@pytest.mark.parametrize("peer_failed", [True, False])
def test_an_error_after_a_peer_failed_is_reported_as_its_consequence(monkeypatch, capsys,
                                                                     peer_failed):
  """Process 0 sits in a collective when process 1 fails and exits: the collective fails
  here (gloo: connection closed by peer) before the watchdog's next poll. The launcher
  then stops as the watchdog would (the peer's reason, status 3, no traceback); without
  a failed peer the same error is a bug (traceback, status 1, reported to the job)."""
  from bert_jax.multihost import job_failure
  from launch import cli
  reason = "ValueError: --config.data.data_dir='/x' does not exist"
  store = _Store({"bert_jax/job/failed/1": reason} if peer_failed else {})
  monkeypatch.setattr(job_failure, "_watchdog",
                      job_failure._Watchdog(store, 0, 2, poll_s=60.0, grace_s=0.0))
  monkeypatch.setattr(job_failure, "_flush", lambda: None)
  monkeypatch.setattr(job_failure.os, "_exit", _exit)

  def main(argv):
    raise RuntimeError("UNKNOWN: Gloo AllGather failed: Connection closed by peer")

  with pytest.raises(_Exited) as exited:
    cli._guarded(main)(["launcher"])  # pylint: disable=protected-access
  err = capsys.readouterr().err
  if peer_failed:
    assert exited.value.args == (job_failure.STOPPED_BY_PEER,)
    assert err.splitlines() == [f"error: process 1 of 2 failed: {reason}",
                                "error: stopping process 0 because process 1 failed"], err
    assert store.entries["bert_jax/job/ack/0"] == "1"
  else:
    assert exited.value.args == (1,)
    assert "Traceback" in err and "Gloo AllGather failed" in err
    assert store.entries["bert_jax/job/failed/0"].startswith("RuntimeError: UNKNOWN: Gloo")
