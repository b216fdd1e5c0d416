"""Joining several processes: failure modes end fast with a clear message, never a hang.

Real processes on loopback, CPU devices, gloo collectives; every process is
bounded in time and killed in the end.
"""

import sys
import time

import pytest

from bert_jax.multihost import distributed

from tests.helpers.processes import child_env, free_port, run_processes


_INIT = ("import sys; from bert_jax.multihost import distributed as d; "
         "d.initialize(d.DistributedConfig(coordinator_address=sys.argv[1], num_processes=int(sys.argv[2]), "
         "process_id=int(sys.argv[3]), timeout_s=20)); print('joined', flush=True)")


def test_unreachable_coordinator_is_a_clear_error_within_the_timeout():
  port = free_port()   # nobody listens there
  start = time.monotonic()
  [(rc, out)] = run_processes(
      [[sys.executable, "-m", "launch.pretrain", "--config=bert_jax/configs/tiny.py:tiny",
        "--workdir=/tmp/unused-bert-jax-workdir", f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2", "--process_id=1", "--distributed_timeout_s=3"]],
      timeout=120, env=child_env())
  assert rc == 2, out
  assert f"cannot reach the coordinator at 127.0.0.1:{port} within 3 s" in out
  assert time.monotonic() - start < 100


def test_processes_that_disagree_on_the_count_stop_with_a_clear_error():
  address = f"127.0.0.1:{free_port()}"
  results = run_processes(
      [[sys.executable, "-c", _INIT, address, "2", "0"],
       [sys.executable, "-c", _INIT, address, "3", "1"]], timeout=120, env=child_env())
  for rc, out in results:
    assert rc != 0, out
    assert "disagree on --num_processes" in out, out


def test_two_processes_join():
  address = f"127.0.0.1:{free_port()}"
  results = run_processes(
      [[sys.executable, "-c", _INIT, address, "2", str(i)] for i in range(2)], timeout=120,
      env=child_env())
  for rc, out in results:
    assert rc == 0 and "joined" in out, out


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"--process_id=2: must be in \[0, 2\)"):
    distributed.initialize(distributed.DistributedConfig("127.0.0.1:1", 2, 2))
  with pytest.raises(ValueError, match="expected HOST:PORT"):
    distributed.initialize(distributed.DistributedConfig("localhost", 2, 0))
  with pytest.raises(ValueError, match="--process_id missing"):
    distributed.initialize(distributed.DistributedConfig("127.0.0.1:1", 2, None))


def test_single_process_needs_nothing(monkeypatch):
  for var in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(var, raising=False)
  assert distributed.detected_cluster() is None
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("SLURM_PROCID", "0")
  assert distributed.detected_cluster() is None      # a one-task SLURM job is one process
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.detected_cluster() == "SLURM"
