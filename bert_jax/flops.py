"""FLOPs and peak accounting: model FLOPs per sequence, device peaks, MFU.

FLOPs are *model* FLOPs (what the maths needs), not hardware FLOPs: rematerialised
forward passes are not counted, so MFU is comparable across remat policies.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

def matmul_params_per_token(config) -> int:
  """Weights of the encoder matmuls every token goes through (per token).

  Per layer: Q, K, V, output projections (4·H²) and the two MLP matrices (2·H·I;
  three, 3·H·I, for a gated FFN). Embedding lookups are gathers, not matmuls, and are
  excluded; biases and LayerNorm are O(H) and excluded.
  """
  h, i = config.hidden_size, config.intermediate_size
  ffn = 3 if getattr(config, "ffn_type", "mlp") == "glu" else 2
  return config.num_hidden_layers * (4 * h * h + ffn * h * i)


def _attended_keys(config, seq_len: int) -> int:
  """Keys per query summed over layers: seq_len in global layers, at most the window
  (window // 2 on each side, and the query) in local ones."""
  window = getattr(config, "sliding_window", 0)
  local = min(seq_len, window // 2 * 2 + 1)
  return sum(local if config.is_local_layer(i) else seq_len
             for i in range(config.num_hidden_layers)) if window else (
                 config.num_hidden_layers * seq_len)


def train_flops_per_sequence(config, seq_len: int, num_predictions: int) -> float:
  """Training FLOPs (forward + backward) of one sequence.

  6 x (parameters used per token) x tokens            -- encoder matmuls
  + 12 · heads · head_dim · (keys attended) per token -- QK^T and AV, forward 4·S·d
                                                          per token per layer, x3 (S: the
                                                          window in local layers)
  + 6 x (H² + H·V) x num_predictions                   -- MLM transform + tied decoder,
                                                          only at the predicted positions
  + 6 x (H² + 2·H)                                     -- pooler + NSP classifier ([CLS]),
                                                          when the model has them
  """
  h, v = config.hidden_size, config.vocab_size
  head_dim = h // config.num_attention_heads
  encoder = 6 * matmul_params_per_token(config) * seq_len
  attention = (12 * config.num_attention_heads * head_dim * seq_len
               * _attended_keys(config, seq_len))
  mlm = 6 * (h * h + h * v) * num_predictions
  nsp = 6 * (h * h + 2 * h) if getattr(config, "next_sentence_head", True) else 0
  return float(encoder + attention + mlm + nsp)


# Dense bf16 peak FLOP/s per chip (vendor figures, no sparsity). MFU is quoted
# against this peak whatever the compute dtype, the usual convention (PaLM, MaxText).
# Order matters: the first substring found in `device_kind` wins.
PEAK_FLOPS_BF16: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),       # SXM / HBM3
    ("A100", 312e12),
    ("TPU v5 lite", 197e12),  # v5e reports itself as "TPU v5 lite"
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v4", 275e12),
)


def peak_flops_for(device_kind: str) -> float | None:
  """Per-chip peak from the table, or None when the device is not listed."""
  for key, peak in PEAK_FLOPS_BF16:
    if key.lower() in device_kind.lower():
      return peak
  return None


def measure_cpu_matmul_peak(size: int = 1024, repeats: int = 5, dtype: str = "float32") -> float:
  """Best FLOP/s of a jitted `size`³ matmul on the first CPU device.

  XLA's CPU dot is multi-threaded over the host's cores, so this is the host's
  peak, and CPU MFU divides by it once (not once per simulated device).
  """
  import jax
  import jax.numpy as jnp

  dev = jax.devices("cpu")[0]
  a = jax.device_put(jnp.ones((size, size), dtype), dev)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()  # compile
  best = math.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * size**3 / best


def system_peak_flops(devices: Sequence[Any], compute_dtype: str = "float32") -> tuple[float | None, str]:
  """(peak FLOP/s of all `devices` together, where the figure comes from)."""
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":
    return measure_cpu_matmul_peak(dtype=compute_dtype), "measured CPU matmul"
  peak = peak_flops_for(kind)
  if peak is None:
    return None, f"unknown device kind {kind!r}"
  return peak * len(devices), f"table ({kind})"


def mfu(flops_per_sec: float, peak_flops: float | None) -> float | None:
  return None if not peak_flops else flops_per_sec / peak_flops
