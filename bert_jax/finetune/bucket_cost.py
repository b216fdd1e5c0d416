"""How many batch widths a run should compile: a cost model, chosen per run.

Each extra width saves the padding the narrower batches no longer compute, and costs a
train and an eval step compilation. On a short run compilation wins; on a long one the
padding does; with the persistent compilation cache warm, a width compiled before is
nearly free. So for k = 1..MAX_BUCKETS (the k widths `bucketing.bucket_widths` fits to the
data; 1: every batch at the longest example's width) the run's seconds are estimated as

  sum over the run's batches (train and eval, every epoch) of the batch's FLOPs / rate
  + compile seconds of each (train | eval, width) shape not compiled on this machine before
    (a train shape: with the same number of steps, its schedule being compiled in)

and the cheapest k is taken (the fewest widths on a tie):
  FLOPs    per token and layer, forward 2 * (4 H^2 + 2 H I) + 4 H * width (attention),
           a train step three times its forward; the rows of a batch padded to its width;
  rate     measured once per process: a float32 matmul of BERT-layer shape on the device,
           at an assumed 50% of it in the model (`measure_rate`);
  compile  measured: the seconds per shape of this machine's last cold compilation of the
           same model, task, batch and devices, kept in `COSTS_FILE` in the compilation
           cache directory; before any, a prior of (1 + layers) seconds per train shape
           and half that per eval shape (this project's 2-core CPU figures: 2.8 s per
           shape at 2 layers). Shapes that file lists as compiled cost 5% of that while the
           cache is on (a load, not a compilation).
`--length_buckets=N` (N >= 1) overrides the choice.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
import time
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import fileio
from bert_jax.finetune import bucketing

MAX_BUCKETS = 6
COSTS_FILE = "bert_jax_bucket_costs.json"
MODEL_EFFICIENCY = 0.5  # the model's share of the measured matmul rate
WARM_SHARE = 0.05       # a cached shape's load, as a share of its compilation


def prior_compile_seconds(num_layers: int) -> float:
  """Seconds to compile one train-step shape before any measurement (eval: half)."""
  return 1.0 + float(num_layers)


@functools.cache
def measure_rate() -> float:
  """float32 FLOP/s of a [2048, 768] x [768, 3072] matmul on the default device (median
  of 5 after a warm-up)."""
  a = jnp.ones((2048, 768), jnp.float32)
  b = jnp.ones((768, 3072), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  times = []
  for _ in range(5):
    start = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * 2048 * 768 * 3072 / max(float(np.median(times)), 1e-9)


def token_flops(hidden: int, intermediate: int, layers: int, width: int, train: bool) -> float:
  forward = layers * (2 * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * hidden * width)
  return 3.0 * forward if train else float(forward)


def widths_for(lengths: np.ndarray, max_seq_length: int, k: int) -> tuple[int, ...]:
  return bucketing.bucket_widths(lengths, max_seq_length, k)


def padded_tokens(lengths: np.ndarray, widths: tuple[int, ...], batch_size: int
                  ) -> dict[int, int]:
  """{width: rows x width computed}, every batch at full `batch_size` rows."""
  counts = np.bincount(bucketing.assign(lengths, widths), minlength=len(widths))
  return {w: -(-int(c) // batch_size) * batch_size * w for w, c in zip(widths, counts) if c}


class Costs:
  """The per-machine record in the compilation cache directory (None: nothing kept)."""

  _lock = threading.Lock()

  def __init__(self, cache_dir: str | None, signature: str):
    self.path = os.path.join(cache_dir, COSTS_FILE) if cache_dir else None
    self.signature = signature
    entry = self._read().get(signature, {})
    self.compile_seconds: float | None = entry.get("compile_seconds_per_shape")
    # (step, width, train steps of the run): a train step's program holds the learning-rate
    # schedule, so it is the same program (a cache hit) only for the same number of steps.
    self.compiled: set[tuple[str, int, int]] = {
        (k, int(w), int(n)) for k, w, n in entry.get("compiled", [])}

  def _read(self) -> dict:
    if self.path is None or not os.path.exists(self.path):
      return {}
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}  # a damaged record only costs the prior

  def record(self, seconds_per_shape: float | None,
             shapes: Iterable[tuple[str, int, int]]) -> None:
    if self.path is None or jax.process_index() != 0:
      return
    with self._lock:
      table = self._read()
      entry = table.setdefault(self.signature, {})
      if seconds_per_shape is not None:
        entry["compile_seconds_per_shape"] = seconds_per_shape
      entry["compiled"] = sorted({*map(tuple, entry.get("compiled", [])), *shapes})
      fileio.write_text_atomic(self.path, json.dumps(table, indent=1, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class RunShape:
  """What the estimate needs of a run besides its lengths: sizes, epochs, device rate."""
  max_seq_length: int
  epochs: int
  batch_size: int
  eval_batch_size: int
  hidden: int
  intermediate: int
  layers: int
  rate: float  # device FLOP/s (`measure_rate`)


def train_steps(train_lengths, run: RunShape, k: int) -> int:
  """The run's number of train steps with `length_buckets=k` (0 without training)."""
  if train_lengths is None or not len(train_lengths):
    return 0
  widths = widths_for(train_lengths, run.max_seq_length, k)
  return run.epochs * bucketing.num_batches(train_lengths, widths, run.batch_size)


def estimate(k: int, train_lengths, eval_lengths, run: RunShape, compile_seconds: float,
             compiled: set[tuple[str, int, int]], cache_on: bool) -> dict:
  """The estimated seconds of a run with `length_buckets=k` (see the module doc)."""
  compute, shapes = 0.0, []
  steps = train_steps(train_lengths, run, k)
  for kind, lengths, batch in (("train", train_lengths, run.batch_size),
                               ("predict", eval_lengths, run.eval_batch_size)):
    if lengths is None or not len(lengths):
      continue
    for width, tokens in padded_tokens(lengths, widths_for(lengths, run.max_seq_length, k),
                                       batch).items():
      flops = tokens * token_flops(run.hidden, run.intermediate, run.layers, width,
                                   kind == "train")
      compute += run.epochs * flops / (run.rate * MODEL_EFFICIENCY)
      shapes.append((kind, width, steps if kind == "train" else 0))
  compiling = 0.0
  for kind, width, n in shapes:
    share = WARM_SHARE if cache_on and (kind, width, n) in compiled else 1.0
    compiling += share * compile_seconds * (1.0 if kind == "train" else 0.5)
  return dict(k=k, seconds=compute + compiling, compute_seconds=compute,
              compile_seconds=compiling, shapes=shapes)


def choose(train_lengths, eval_lengths, costs: Costs, cache_on: bool, run: RunShape
           ) -> tuple[int, list]:
  """(the cheapest k, the estimate of every k)."""
  compile_seconds = costs.compile_seconds or prior_compile_seconds(run.layers)
  table = [estimate(k, train_lengths, eval_lengths, run, compile_seconds, costs.compiled,
                    cache_on) for k in range(1, MAX_BUCKETS + 1)]
  best = min(table, key=lambda row: (round(row["seconds"], 6), row["k"]))
  return best["k"], table


def signature(cfg, bert_config) -> str:
  """What a compiled step's cost depends on, beyond its width."""
  device = jax.devices()[0]
  return "|".join(str(x) for x in (
      jax.default_backend(), getattr(device, "device_kind", ""), jax.device_count(), cfg.task,
      cfg.peft_method, bert_config.num_hidden_layers, bert_config.hidden_size,
      bert_config.intermediate_size, bert_config.num_attention_heads, bert_config.vocab_size,
      cfg.dtype, cfg.batch_size, cfg.eval_batch_size, jax.__version__,
      # compiled into the train step with the schedule
      cfg.learning_rate, cfg.warmup_fraction, cfg.weight_decay, cfg.grad_clip_norm))


def plan(cfg, bert_config, train_mask, eval_mask, cache_dir: str | None) -> tuple[int, Costs]:
  """The number of widths for the run of `cfg` (its override when given), and the record
  to update when it is done. Prints the estimates when it chooses."""
  costs = Costs(cache_dir, signature(cfg, bert_config))
  if cfg.length_buckets > 0:
    return cfg.length_buckets, costs
  lengths = [None if m is None else bucketing.lengths_of(m) for m in (train_mask, eval_mask)]
  run = RunShape(max_seq_length=cfg.max_seq_length,
                 epochs=cfg.num_epochs if train_mask is not None else 1,
                 batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                 hidden=bert_config.hidden_size, intermediate=bert_config.intermediate_size,
                 layers=bert_config.num_hidden_layers, rate=measure_rate())
  k, table = choose(*lengths, costs, cache_dir is not None, run)
  if jax.process_index() == 0:
    source = "measured" if costs.compile_seconds else "prior"
    print("length buckets: " + " | ".join(
        f"{row['k']}: {row['seconds']:.1f}s ({row['compile_seconds']:.1f}s compiling)"
        for row in table) + f" -> {k} (estimated run seconds; compile seconds {source})",
          flush=True)
  return k, costs


def record_run(costs: Costs, compiled_keys, compile_seconds: float, cold: bool,
               steps: int) -> None:
  """Keeps the shapes this run of `steps` train steps compiled and, when none came from
  the cache, its compile seconds per shape (an eval shape counted as half)."""
  shapes = [(key[0], dict(key[1:])["input_ids"][1], steps if key[0] == "train" else 0)
            for key in compiled_keys if key[0] in ("train", "predict")]
  units = sum(1.0 if kind == "train" else 0.5 for kind, _, _ in shapes)
  per_shape = compile_seconds / units if cold and units else None
  costs.record(per_shape, shapes)
