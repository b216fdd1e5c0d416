"""Real processes for tests: loopback ports, a child environment, bounded runs."""
import os
import socket
import subprocess
import time

from tests.helpers import REPO


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(devices_per_process: int = 1) -> dict:
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
  env.pop("SLURM_JOB_ID", None)
  env.pop("JAX_COORDINATOR_ADDRESS", None)
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
