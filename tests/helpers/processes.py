"""Real processes for tests: loopback ports, a child environment, jobs of one or more
processes with their output in log files, and what a pretraining run leaves behind."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from tests.helpers import REPO, xla_flags

# metrics.jsonl fields that depend on the machine's speed, not on the run.
TIMING_KEYS = frozenset({"seq_per_sec", "tokens_per_sec", "mfu"})


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(devices_per_process: int = 1, compilation_cache: str | None = None, **extra) -> dict:
  """The environment of a launcher under test: CPU devices, no cluster or test-hook
  variables inherited; `compilation_cache` lets restarts reuse compiled steps (the same
  executables, so bit exactness is untouched; compilation is most of a restart's time)."""
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS=xla_flags(devices_per_process))
  for name in ("SLURM_JOB_ID", "JAX_COORDINATOR_ADDRESS", "PYTEST_CURRENT_TEST",
               "BERT_JAX_TEST_FAIL", "BERT_JAX_VERBOSE"):
    env.pop(name, None)
  if compilation_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=compilation_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.update(extra)
  return env


def run_processes(commands, timeout, env):
  """Starts every command, waits at most `timeout` s in all; returns [(rc, output)]."""
  procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True) for c in commands]
  deadline = time.monotonic() + timeout
  results = []
  try:
    for p in procs:
      out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
      results.append((p.returncode, out))
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, 9)
        p.wait()
  return results


class Job:
  """The processes of one job (one command each, run from the repository root), each in
  its own process group with its output in LOG_DIR/NAME-i.log; `poll`/`wait` record when
  each exited. Call `kill` in a `finally`: a test never leaves a process behind."""

  def __init__(self, log_dir, name, commands, env):
    self.logs = [os.path.join(str(log_dir), f"{name}-{i}.log") for i in range(len(commands))]
    self.procs, self.exit_times = [], [None] * len(commands)
    for command, log_path in zip(commands, self.logs):
      with open(log_path, "w") as log:
        self.procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

  def output(self, i=0):
    with open(self.logs[i]) as f:
      return f.read()

  def outputs(self):
    return "\n".join(f"--- process {i}:\n{self.output(i)[-4000:]}" for i in range(len(self.procs)))

  def poll(self):
    """True once every process has exited."""
    for i, p in enumerate(self.procs):
      if self.exit_times[i] is None and p.poll() is not None:
        self.exit_times[i] = time.time()
    return all(t is not None for t in self.exit_times)

  def wait(self, timeout):
    """The exit statuses; fails the test (killing every process) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not self.poll():
      if time.monotonic() > deadline:
        self.kill()
        pytest.fail(f"the job did not end within {timeout} s:\n{self.outputs()}")
      time.sleep(0.05)
    return [p.returncode for p in self.procs]

  def signal(self, sig, process=None):
    for i, p in enumerate(self.procs):
      if (process is None or i == process) and p.poll() is None:
        try:
          os.killpg(p.pid, sig)
        except ProcessLookupError:
          pass

  def kill(self):
    self.signal(signal.SIGKILL)
    for p in self.procs:
      p.wait(30)


def records(workdir):
  """metrics.jsonl of a run, without the timing fields."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in f]


def committed(workdir):
  """The steps of the committed checkpoints in WORKDIR/checkpoints."""
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []
