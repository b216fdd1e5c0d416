"""Measurements of the modern encoder: one local and one global layer against the
sequence length, and a ModernBERT-shaped layer stack against transformers' PyTorch one.

Time is the median wall time of jitted forward passes after a warm-up call; memory
is XLA's own account of the compiled program (arguments + outputs + temporaries,
`Compiled.memory_analysis()`), which on the CPU is what the run allocates for it.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import model as model_lib


@dataclasses.dataclass(frozen=True)
class LayerTiming:
  kind: str          # "local" or "global"
  seq_len: int
  seconds: float     # median forward time of one layer, batch 1
  peak_bytes: int    # arguments + outputs + temporaries of the compiled layer


def _layer_inputs(config: model_lib.BertConfig, seq_len: int):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, seq_len, config.hidden_size)),
                  jnp.dtype(config.dtype))
  mask = jnp.ones((1, seq_len), jnp.int32)
  positions = jnp.arange(seq_len)[None]
  ctx = {"mask": model_lib.attention_mask_4d(mask), "q_segment": mask, "k_segment": mask,
         "rope_global": model_lib.rope_tables(positions, config.head_dim, config.rope_theta),
         "rope_local": model_lib.rope_tables(positions, config.head_dim,
                                             config.local_rope_theta or config.rope_theta)}
  return x, ctx


def _time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # warm-up (and the compile, when not AOT)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _peak_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def time_layer(config: model_lib.BertConfig, seq_len: int, local: bool,
               repeats: int = 3) -> LayerTiming:
  """One layer of `config` (index 1: local with a window; index 0: global), batch 1."""
  layer = model_lib.BertLayer(config, index=1 if local else 0)
  x, ctx = _layer_inputs(config, seq_len)
  params = nn.unbox(layer.init(jax.random.key(0), x[:, :8], _slice_ctx(ctx, 8))["params"])
  fn = jax.jit(lambda p, x, ctx: layer.apply({"params": p}, x, ctx)[0])
  compiled = fn.lower(params, x, ctx).compile()
  return LayerTiming("local" if local else "global", seq_len,
                     _time(compiled, params, x, ctx, repeats=repeats), _peak_bytes(compiled))


def _slice_ctx(ctx, n):
  out = {"mask": ctx["mask"][..., :n], "q_segment": ctx["q_segment"][:, :n],
         "k_segment": ctx["k_segment"][:, :n]}
  for key in ("rope_global", "rope_local"):
    out[key] = tuple(t[:, :n] for t in ctx[key])
  return out


def layer_scaling(config: model_lib.BertConfig, seq_lens: Sequence[int],
                  repeats: int = 3) -> list[LayerTiming]:
  """`time_layer` for a local and a global layer at each length."""
  if not config.sliding_window:
    raise ValueError("layer_scaling needs a config with a sliding_window (local layers)")
  return [time_layer(config, n, local, repeats) for n in seq_lens for local in (True, False)]


def scaling_table(rows: Sequence[LayerTiming]) -> str:
  lines = ["| tokens | local layer ms | local MiB | global layer ms | global MiB |",
           "|---:|---:|---:|---:|---:|"]
  by_len: dict[int, dict[str, LayerTiming]] = {}
  for r in rows:
    by_len.setdefault(r.seq_len, {})[r.kind] = r
  for n, kinds in sorted(by_len.items()):
    loc, glo = kinds["local"], kinds["global"]
    lines.append(f"| {n} | {loc.seconds * 1e3:.1f} | {loc.peak_bytes / 2**20:.0f} | "
                 f"{glo.seconds * 1e3:.1f} | {glo.peak_bytes / 2**20:.0f} |")
  return "\n".join(lines)


def time_stack_ours(config: model_lib.BertConfig, batch: int, seq_len: int,
                    repeats: int = 3) -> float:
  """Median seconds of one forward pass of our encoder (`BertModel`, no heads)."""
  model = model_lib.BertModel(config, add_pooling_layer=False)
  ids = jnp.asarray(np.random.default_rng(0).integers(5, config.vocab_size, (batch, seq_len)),
                    jnp.int32)
  mask = jnp.ones_like(ids)
  params = jax.jit(lambda: nn.unbox(model.init(jax.random.key(0), ids[:, :8])["params"]))()
  fn = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, None, mask)[0])
  return _time(fn, params, ids, mask, repeats=repeats)


def time_stack_transformers(config: model_lib.BertConfig, batch: int, seq_len: int,
                            repeats: int = 3, attn_implementation: str = "sdpa") -> float:
  """The same for transformers' ModernBertModel in PyTorch (CPU, fp32, no_grad)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from bert_jax import interop_modern  # pylint: disable=import-outside-toplevel

  fields = {k: v for k, v in interop_modern.config_to_hf(config).items()
            if k not in ("architectures", "model_type")}
  hf_config = transformers.ModernBertConfig(**fields)
  hf_config._attn_implementation = attn_implementation  # pylint: disable=protected-access
  model = transformers.ModernBertModel(hf_config).eval()
  ids = torch.tensor(np.random.default_rng(0).integers(5, config.vocab_size, (batch, seq_len)))
  mask = torch.ones_like(ids)
  with torch.no_grad():
    model(input_ids=ids, attention_mask=mask)
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      model(input_ids=ids, attention_mask=mask)
      times.append(time.perf_counter() - start)
  return statistics.median(times)
