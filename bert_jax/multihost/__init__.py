"""Running one job over many processes (hosts), and stopping it cleanly.

Modules:
  distributed.py  joining JAX's distributed runtime (explicit flags, or the cluster's
                  environment: Cloud TPU, SLURM, Open MPI, Kubernetes), with clear errors
                  for an unreachable coordinator or disagreeing process counts.
  job_failure.py  one process failing ends every process of the job promptly (a
                  watchdog over the coordination service), and the failure points that
                  the multi-process tests inject.
  preemption.py   SIGTERM (or the runtime's preemption notice) becomes a checkpoint at
                  the next step boundary, then `Preempted`.

Fine-tuning runs (distillation, suites) and serving use these as they are: a new loop
joins the job through `distributed.initialize` and saves on preemption through the
checkpoint manager's step hook; nothing task-specific belongs here.

This file imports nothing.
"""
