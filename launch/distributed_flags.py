"""Flags that join a multi-process job, shared by the launchers.

On Cloud TPU VM slices, under SLURM's `srun`, Open MPI or with
JAX_COORDINATOR_ADDRESS set, nothing needs to be given: jax detects the job.
Elsewhere (a hand-started multi-node GPU job, the tests on loopback) give all three of
--coordinator_address, --num_processes and --process_id.
"""
from absl import flags

from bert_jax.multihost import distributed

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, reachable from every process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1.")
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout_s", 300, "Seconds to wait for the coordinator and for every process.")
_FAILURE_TIMEOUT = flags.DEFINE_integer(
    "failure_timeout_s", distributed.DistributedConfig.failure_timeout_s,
    "Seconds without a heartbeat after which a process counts as dead and the whole job "
    "stops (a process that raises stops the job at once).")


def initialize() -> None:
  """Joins the job described by the flags or the environment. Bad flags raise
  ValueError, a job that cannot form raises DistributedSetupError (one `error:` line
  and exit status 2 under `launch.cli.run`)."""
  distributed.initialize(distributed.DistributedConfig(
      coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value, timeout_s=_TIMEOUT.value,
      failure_timeout_s=_FAILURE_TIMEOUT.value))
