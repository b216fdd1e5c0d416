"""The pretraining loop's reporting: timing windows, throughput, MFU, printed lines.

One object, so that the loop reads as step, hooks, eval. A window starts after the
first step (which includes compilation) and again after every log line and eval, so
throughput never counts compilation or evaluation time.

Throughput counts useful work, not rows × max_seq_length: `seq_per_sec` is BERT
instances per second (a packed row holds several), `tokens_per_sec` real (non-[PAD])
tokens per second, and MFU the model FLOPs of those real tokens over the peak. So a
run that pads half of every row reports half the MFU of one that fills its rows, and
packed and unpacked runs compare directly. The train step reports the window's counts
as `STEP_COUNT_KEYS`; they become rates here and are not written as metrics.
"""
from __future__ import annotations

import math
import time
from typing import Mapping

from bert_jax import flops as flops_lib
from bert_jax import metrics as metrics_lib

# Per-step counts in the train step's metrics, turned into rates by `log`.
INSTANCES_KEY, REAL_TOKENS_KEY = "instances", "real_tokens"
STEP_COUNT_KEYS = (INSTANCES_KEY, REAL_TOKENS_KEY)


class ProgressReporter:
  """Writes each log window's metrics (plus seq/s, tokens/s and MFU) to `writer`
  and, on the printing process, a progress line; likewise eval results.
  `flops_per_sequence` is the train FLOPs of one full `seq_len` row."""

  def __init__(self, writer: metrics_lib.MetricsWriter, *, total_steps: int,
               global_batch_size: int, seq_len: int, flops_per_sequence: float,
               peak_flops: float | None, printing: bool):
    self._writer = writer
    self._total = total_steps
    self._batch = global_batch_size
    self._seq_len = seq_len
    self._flops = flops_per_sequence
    self._peak = peak_flops
    self._printing = printing
    self.restart_window()

  def restart_window(self) -> None:
    """Starts timing afresh (after compilation, a log line or an evaluation)."""
    self._start, self._steps = time.perf_counter(), 0

  def step_done(self) -> None:
    self._steps += 1

  def log(self, step: int, logged: Mapping[str, float]) -> None:
    """The window's mean train metrics `logged`, with its throughput, at `step`."""
    elapsed = time.perf_counter() - self._start
    logged = dict(logged)
    # Means per step over the window; a step without them counts full rows.
    instances = logged.pop(INSTANCES_KEY, float(self._batch))
    real_tokens = logged.pop(REAL_TOKENS_KEY, float(self._batch * self._seq_len))
    if self._steps:
      steps_per_sec = self._steps / elapsed
      seq_per_sec, tokens_per_sec = instances * steps_per_sec, real_tokens * steps_per_sec
      eta = (self._total - step) / steps_per_sec
    else:
      seq_per_sec = tokens_per_sec = eta = float("nan")
    mfu_value = (flops_lib.mfu(tokens_per_sec * self._flops / self._seq_len, self._peak)
                 if self._steps else None)
    perf = dict(seq_per_sec=seq_per_sec, tokens_per_sec=tokens_per_sec)
    if mfu_value is not None:
      perf["mfu"] = mfu_value
    self._writer.write(step, {**logged, **perf})
    if self._printing:
      print(metrics_lib.progress_line(
          step, self._total, logged, seq_per_sec=seq_per_sec,
          tokens_per_sec=perf["tokens_per_sec"], mfu_value=mfu_value,
          eta_s=0.0 if math.isnan(eta) else eta), flush=True)
    self.restart_window()

  def eval(self, step: int, eval_metrics: Mapping[str, float]) -> None:
    self._writer.write(step, eval_metrics)
    if self._printing:
      print(f"eval at step {step}: " + " | ".join(
          f"{k[5:]} {v:.4f}" for k, v in eval_metrics.items()), flush=True)
    self.restart_window()
