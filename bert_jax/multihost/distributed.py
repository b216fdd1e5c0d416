"""Joining JAX's distributed runtime: one process per host, one global mesh.

Multi-host training in bert-jax is JAX's own: `jax.distributed.initialize`
connects the processes, after which `jax.devices()` lists every device of every
host, the mesh spans them all and GSPMD does the communication. This module
only decides how to call it and turns its failure modes into clear errors:

- explicit: `coordinator_address`, `num_processes`, `process_id` (flags of the
  launchers, e.g. a hand-written multi-node GPU launch);
- detected: Cloud TPU VM slices, SLURM (`srun`), Open MPI, Kubernetes, or
  `JAX_COORDINATOR_ADDRESS` in the environment: jax finds the values itself;
- otherwise a single process, nothing to initialise.

The raw runtime aborts the process from C++ when the coordinator cannot be
reached in time, and accepts processes that disagree on how many they are; so
non-coordinators first check that the coordinator's port answers, and after
start-up all processes compare what they were told. Once joined, a failure of any
process ends every process of the job within `failure_timeout_s` (see
`job_failure`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

from absl import logging
import jax
import numpy as np

from bert_jax.multihost import job_failure


class DistributedSetupError(RuntimeError):
  """The processes could not form one job (unreachable coordinator, disagreeing counts)."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  coordinator_address: str | None = None   # host:port of process 0
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None
  timeout_s: int = 300                     # to connect, and for every process to arrive
  # A process silent this long (killed, hung node) is dead: the others stop. Also
  # bounds jax's shutdown barrier, entered only once every process has finished.
  failure_timeout_s: int = 30

  @property
  def explicit(self) -> bool:
    return any(v is not None for v in (self.coordinator_address, self.num_processes, self.process_id))


# Environment variables by which jax's own cluster detection recognises a job.
_CLUSTER_ENV = {
    "SLURM": ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID"),
    "Open MPI": ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
    "Cloud TPU VM slice": ("TPU_WORKER_HOSTNAMES",),
    "JAX_COORDINATOR_ADDRESS": ("JAX_COORDINATOR_ADDRESS",),
}


def detected_cluster() -> str | None:
  """The name of the multi-process environment we run in, if any (more than one process)."""
  for name, variables in _CLUSTER_ENV.items():
    if all(os.environ.get(v) for v in variables):
      if name == "SLURM" and int(os.environ["SLURM_NTASKS"]) <= 1:
        continue
      if name == "Open MPI" and int(os.environ["OMPI_COMM_WORLD_SIZE"]) <= 1:
        continue
      if name == "Cloud TPU VM slice" and len(os.environ["TPU_WORKER_HOSTNAMES"].split(",")) <= 1:
        continue
      return name
  return None


def _check_explicit(config: DistributedConfig) -> tuple[str, int, int]:
  missing = [f for f in ("coordinator_address", "num_processes", "process_id")
             if getattr(config, f) is None]
  if missing:
    raise ValueError(f"multi-process launch: --{', --'.join(missing)} missing "
                     "(give all of --coordinator_address, --num_processes, --process_id)")
  host, sep, port = config.coordinator_address.rpartition(":")
  if not sep or not host or not port.isdigit():
    raise ValueError(f"--coordinator_address={config.coordinator_address!r}: expected HOST:PORT")
  n, i = int(config.num_processes), int(config.process_id)
  if n < 1:
    raise ValueError(f"--num_processes={n}: must be at least 1")
  if config.failure_timeout_s < 1:
    raise ValueError(f"--failure_timeout_s={config.failure_timeout_s}: must be at least 1")
  if not 0 <= i < n:
    raise ValueError(f"--process_id={i}: must be in [0, {n}) for --num_processes={n}")
  return config.coordinator_address, n, i


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Returns once `address` accepts TCP connections; DistributedSetupError after `timeout_s`."""
  host, _, port = address.rpartition(":")
  host = host.strip("[]")
  deadline = time.monotonic() + timeout_s
  last_error: OSError | None = None
  while time.monotonic() < deadline:
    try:
      with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)):
        return
    except OSError as e:
      last_error = e
      time.sleep(0.5)
  raise DistributedSetupError(
      f"cannot reach the coordinator at {address} within {timeout_s:.0f} s ({last_error}); is "
      "process 0 running, and is the address one this host can reach?")


def initialize(config: DistributedConfig = DistributedConfig()) -> None:
  """Joins the distributed runtime if this is a multi-process job; no-op otherwise.

  Call before anything else touches jax's backends. Raises ValueError for bad
  arguments and DistributedSetupError when the processes cannot agree.
  """
  cluster = None if config.explicit else detected_cluster()
  if not config.explicit and cluster is None:
    return
  # CPU collectives across processes go through gloo (GPU and TPU bring their own).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if config.explicit:
    address, n, i = _check_explicit(config)
    if n == 1:
      return
    if i != 0:
      wait_for_coordinator(address, config.timeout_s)
    logging.info("joining %d processes as process %d (coordinator %s)", n, i, address)
    jax.distributed.initialize(
        coordinator_address=address, num_processes=n, process_id=i,
        local_device_ids=list(config.local_device_ids) if config.local_device_ids else None,
        **_timeouts(config))
    _guard_job()
    _check_agreement(n)
  else:
    logging.info("joining the distributed runtime of this %s job", cluster)
    jax.distributed.initialize(**_timeouts(config))
    _guard_job()
  logging.info("process %d of %d: %d local devices, %d in all", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _timeouts(config: DistributedConfig) -> dict:
  return dict(initialization_timeout=int(config.timeout_s),
              heartbeat_timeout_seconds=int(config.failure_timeout_s),
              shutdown_timeout_seconds=int(config.failure_timeout_s))


def _guard_job() -> None:
  """From here on a failure of any process ends them all (`job_failure`)."""
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
  state = jax_distributed.global_state
  if state.client is not None:
    job_failure.start(state.client, state.process_id, state.num_processes)


def _check_agreement(declared: int) -> None:
  """Every process compares the process count it was given with the others'."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  seen = multihost_utils.process_allgather(np.array([declared], np.int32))
  counts = sorted(set(int(x) for x in np.ravel(seen)))
  if counts != [jax.process_count()]:
    raise DistributedSetupError(
        f"the processes disagree on --num_processes: they were given {counts}, but "
        f"{jax.process_count()} joined; give every process the same --num_processes")


def check_divisible(name: str, value: int) -> None:
  """A per-job quantity (a global batch) must split evenly over the processes."""
  if value % jax.process_count():
    raise ValueError(f"{name}={value} is not divisible by the {jax.process_count()} processes")
