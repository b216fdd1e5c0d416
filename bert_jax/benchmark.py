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

from bert_jax import batch as batch_lib
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
  setup = train.build(config)
  mesh, model, compiled = setup.mesh, setup.model, setup.steps
  state = setup.init_state()

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


def run_on_batches(config: ml_collections.ConfigDict,
                   streams: dict[str, list[dict[str, np.ndarray]]], *, steps: int = 10,
                   warmup_steps: int = 2) -> dict[str, dict[str, Any]]:
  """Times train steps on real host batches, per named stream (e.g. unpacked and packed).

  The streams share one model and train state and are stepped in turn, one step each per
  round, so that load from other processes falls on all of them alike; a stream's step time
  is its median over `steps` rounds. Per stream: step_time_s, rows_per_sec,
  instances_per_sec (NSP instances: rows, or the real slots of packed rows),
  useful_tokens_per_sec (non-pad tokens), instances_per_row and padding_fraction (of the
  row tokens). Compilation and warmup steps are excluded.
  """
  if steps <= 0 or warmup_steps < 1 or not streams or not all(streams.values()):
    raise ValueError(f"steps={steps} must be positive, warmup_steps={warmup_steps} >= 1 and "
                     f"every stream needs a batch")
  setup = train.build(config)
  mesh, compiled = setup.mesh, setup.steps
  state = setup.init_state()
  on_device = {name: [partitioning.host_to_device(batch_lib.pretraining_arrays(b), mesh)
                      for b in bs] for name, bs in streams.items()}
  times: dict[str, list[float]] = {name: [] for name in streams}
  for i in range(warmup_steps + steps):
    for name, batches in on_device.items():
      t0 = time.perf_counter()
      state, m = compiled.train(state, batches[i % len(batches)])
      jax.block_until_ready(m)
      if i >= warmup_steps:
        times[name].append(time.perf_counter() - t0)
  results = {}
  for name, host in streams.items():
    rows = sum(len(b["input_ids"]) for b in host)
    instances = sum(float(b["instance_weights"].sum()) if "instance_weights" in b
                    else len(b["input_ids"]) for b in host)
    useful = sum(int(b["attention_mask"].sum()) for b in host)
    step = float(np.median(times[name]))
    per_step = len(host)
    results[name] = dict(
        preset=config.preset, seq_len=config.max_seq_length, batch_rows=config.global_batch_size,
        steps=steps, step_time_s=step, rows_per_sec=rows / per_step / step,
        instances_per_sec=instances / per_step / step,
        useful_tokens_per_sec=useful / per_step / step, instances_per_row=instances / rows,
        padding_fraction=1.0 - useful / (rows * config.max_seq_length),
        backend=jax.default_backend())
  return results


def _timed(fn, args, steps: int) -> float:
  """Seconds per call of `fn(*args)` after one untimed (compiling) call."""
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(steps):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / steps


def _step_memory(setup: train.Setup, state: Any, batch: Any) -> dict[str, int]:
  """XLA's buffer assignment of the distillation step (arguments, outputs, temporaries:
  bytes), the peak it plans for; on CPU the runtime reports no allocator peak."""
  import functools
  step = jax.jit(functools.partial(train.train_step, model=setup.model, tx=setup.tx,
                                   schedule=setup.schedule),
                 donate_argnums=0)
  with partitioning.axis_rules(setup.mesh, tuple(tuple(r) for r in setup.config.logical_axis_rules)):
    mem = step.lower(state, batch, setup.distill.arg).compile().memory_analysis()
  return dict(argument_bytes=int(mem.argument_size_in_bytes),
              temp_bytes=int(mem.temp_size_in_bytes), output_bytes=int(mem.output_size_in_bytes))


def distillation(config: ml_collections.ConfigDict, *, steps: int = 5) -> list[dict[str, Any]]:
  """General distillation's cost (config.distill.teacher set): rows for the distillation
  step (teacher in float32 and in bfloat16), a plain step of the student, and the
  teacher's forward alone (float32), each timed over `steps` calls on one synthetic
  batch, with the teacher's bytes on device and the step's planned memory."""
  from bert_jax.distillation import loop as distill_lib
  rows = []
  batch_np = synthetic.synthetic_batch(np.random.default_rng(config.seed), config.global_batch_size,
                                       config.max_seq_length, config.max_predictions_per_seq,
                                       config.model.vocab_size)
  for dtype in ("float32", "bfloat16"):
    c = config.copy_and_resolve_references()
    c.distill.teacher_dtype = dtype
    setup = train.build(c)
    batch = partitioning.host_to_device(batch_np, setup.mesh)
    state = setup.init_state()
    memory = _step_memory(setup, setup.init_state(), batch)
    teacher_bytes = sum(x.nbytes for x in jax.tree.leaves(setup.distill.params))
    rows.append(dict(what=f"distillation step, teacher {dtype}", teacher_bytes=teacher_bytes,
                     step_time_s=_train_step_time(setup.steps.train, state, batch, steps),
                     **memory))
    if dtype == "float32":
      forward = jax.jit(lambda p, b: distill_lib.teacher_forward(setup.distill, p, b)[0])
      rows.append(dict(what="teacher forward alone, float32", teacher_bytes=teacher_bytes,
                       step_time_s=_timed(forward, (setup.distill.params, batch), steps)))
  plain = config.copy_and_resolve_references()
  plain.distill.teacher = ""
  rows.append(dict(what="plain student step", teacher_bytes=0,
                   step_time_s=run(plain, steps=steps, warmup_steps=1)["step_time_s"]))
  return rows


def _train_step_time(train_fn, state, batch, steps: int) -> float:
  """Seconds per train step after one untimed (compiling) step; the state is donated,
  so each step feeds the next."""
  state, metrics = train_fn(state, batch)
  jax.block_until_ready((state, metrics))
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = train_fn(state, batch)
  jax.block_until_ready((state, metrics))
  return (time.perf_counter() - t0) / steps


def distillation_table(rows: list[dict[str, Any]]) -> str:
  """A Markdown table of `distillation`'s rows."""
  def mib(row, key):
    return f"{row[key] / 2**20:.1f}" if key in row else "-"
  lines = ["| what | step time (ms) | teacher on device (MiB) | step arguments (MiB) "
           "| step temporaries (MiB) |", "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['what']} | {1e3 * r['step_time_s']:.1f} | {mib(r, 'teacher_bytes')} | "
                 f"{mib(r, 'argument_bytes')} | {mib(r, 'temp_bytes')} |")
  return "\n".join(lines)
