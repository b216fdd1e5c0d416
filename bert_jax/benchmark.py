"""Times full training steps on synthetic contract batches (no text pipeline).

What is timed: `steps` jitted train steps (forward, backward, optimizer update)
on batches already on the devices; compilation and `warmup_steps` are excluded,
and so is host-side input, which the real loop overlaps with the device.
"""
from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax import flops as flops_lib
from bert_jax import partitioning
from bert_jax import synthetic
from bert_jax import train


def run(config: ml_collections.ConfigDict, *, steps: int = 10, warmup_steps: int = 2
        ) -> dict[str, Any]:
  """Returns seq_per_sec, tokens_per_sec, step_time_s, mfu (None if the peak is
  unknown), flops_per_seq, peak_flops, backend, device_kind, num_devices, ..."""
  if steps <= 0 or warmup_steps < 1:
    raise ValueError(f"steps={steps} must be positive and warmup_steps={warmup_steps} >= 1")
  job = train.setup(config)
  mesh, model, compiled = job.mesh, job.model, job.steps
  state = job.init_state()

  rng = np.random.default_rng(config.seed)
  local_batch = config.global_batch_size // jax.process_count()
  batches = [
      partitioning.host_to_device(
          synthetic.synthetic_batch(rng, local_batch, config.max_seq_length,
                                    config.max_predictions_per_seq, config.model.vocab_size),
          mesh)
      for _ in range(2)]

  for i in range(warmup_steps):  # the first includes compilation
    state, m = compiled.train(state, batches[i % 2])
  jax.block_until_ready((state, m))
  t0 = time.perf_counter()
  for i in range(steps):
    state, m = compiled.train(state, batches[i % 2])
  jax.block_until_ready((state, m))
  step_time = (time.perf_counter() - t0) / steps
  loss = float(m["loss"])

  devices = list(mesh.devices.flat)
  flops = flops_lib.train_flops_per_sequence(
      model.config, config.max_seq_length, config.max_predictions_per_seq)
  peak, peak_source = flops_lib.system_peak_flops(devices, config.model.dtype)
  seq_per_sec = config.global_batch_size / step_time
  return dict(
      preset=config.preset,
      batch_size=config.global_batch_size,
      seq_len=config.max_seq_length,
      num_predictions=config.max_predictions_per_seq,
      dtype=config.model.dtype,
      steps=steps,
      seq_per_sec=seq_per_sec,
      tokens_per_sec=seq_per_sec * config.max_seq_length,
      step_time_s=step_time,
      mfu=flops_lib.mfu(seq_per_sec * flops, peak),
      flops_per_seq=flops,
      peak_flops=peak,
      peak_source=peak_source,
      final_loss=loss,
      backend=jax.default_backend(),
      device_kind=devices[0].device_kind,
      num_devices=len(devices),
      mesh_shape=[int(s) for s in mesh.devices.shape],
  )
