"""BERT in Flax linen: the encoder, the pretraining heads and the task heads.

The layer maths follow the original BERT (and transformers' `modeling_bert`):
post-LayerNorm residual blocks, exact (erf) GELU, learned absolute positions,
a tanh pooler on [CLS], an MLM decoder tied to the word embeddings. The module
tree mirrors transformers' names (`bert/embeddings/word_embeddings`,
`bert/encoder/layer_0/attention/self/query`, `cls/predictions/transform`, ...)
so that `interop.py` is a renaming, not a translation.

The modern-encoder options of `BertConfig` (rotary positions, gated FFN,
pre-normalisation, no biases, alternating local/global attention, a padded
vocabulary, no NSP head; ModernBERT's architecture, see docs/modern_encoder.md)
are options of these same modules, all off by default: with the defaults the
parameter tree and the maths are BERT's exactly.

Every parameter is created through `nn.with_logical_partitioning`, so `init`
returns `LogicallyPartitioned` boxes whose axis names come from
`partitioning.py`; `apply` takes plain (unboxed) arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import partitioning

# BERT's published sizes (google-research/bert README): layers, hidden, heads.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8),
    "medium": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12),
    "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16),
}

_ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # BERT's exact erf GELU
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,  # SwiGLU's gate activation
}
_DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("xla", "cudnn")
REMAT_POLICIES = ("none", "full", "dots")
POSITION_EMBEDDING_TYPES = ("absolute", "none")
FFN_TYPES = ("mlp", "glu")
NORM_TYPES = ("layernorm", "rmsnorm")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Model hyperparameters. Field names are transformers' `BertConfig` names."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  # Not part of the checkpoint: how the computation runs.
  dtype: str = "float32"         # activations and matmuls
  param_dtype: str = "float32"   # stored parameters (and so optimizer state)
  attention_impl: str = "xla"    # "cudnn": fused attention through jax.nn.dot_product_attention
  remat_policy: str = "none"     # activation rematerialisation per layer
  scan_layers: bool = False      # one traced layer scanned over depth: fast compiles for deep models
  # Modern-encoder options (ModernBERT's architecture); every default is BERT's.
  position_embedding_type: str = "absolute"  # "absolute": learned table; "none": RoPE only
  rope_theta: float = 0.0        # RoPE base of the global layers; 0: no rotary positions
  local_rope_theta: float = 0.0  # RoPE base of the local layers; 0: rope_theta
  ffn_type: str = "mlp"          # "glu": act(x W_in) * (x W_gate); GeGLU (gelu) / SwiGLU (silu)
  norm_type: str = "layernorm"   # or "rmsnorm"
  prenorm: bool = False          # pre-norm residual blocks and a final norm (no norm before layer 0)
  use_bias: bool = True          # biases of the dense layers (attention, FFN, MLM transform)
  norm_bias: bool = True         # biases of the LayerNorms
  sliding_window: int = 0        # local layers attend |i - j| <= sliding_window // 2; 0: all global
  global_every: int = 1          # with a window: layer i is global iff i % global_every == 0
  vocab_multiple: int = 1        # word-embedding rows rounded up to a multiple (64: ModernBERT)
  next_sentence_head: bool = True  # pooler + NSP classifier in BertForPreTraining
  # Parameter-efficient fine-tuning hooks (bert_jax/finetune/peft); 0 = off, the classic model.
  adapter_size: int = 0          # Houlsby bottleneck after the attention and after the FFN
  prefix_length: int = 0         # trainable key/value prefixes per layer (P-tuning v2)

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "vocab_multiple"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
    if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
      raise ValueError(f"BertConfig.type_vocab_size must be an integer >= 0 (0: no token types), "
                       f"got {self.type_vocab_size!r}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
          f"num_attention_heads ({self.num_attention_heads})")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"BertConfig.hidden_act {self.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"BertConfig.{name} {getattr(self, name)!r} is not one of {_DTYPES}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"BertConfig.attention_impl {self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"BertConfig.remat_policy {self.remat_policy!r} is not one of {REMAT_POLICIES}")
    for name in ("adapter_size", "prefix_length"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"BertConfig.{name} must be an integer >= 0, got {value!r}")
    if not 0 <= self.pad_token_id < self.vocab_size:
      raise ValueError(f"BertConfig.pad_token_id {self.pad_token_id} is outside the vocabulary")
    self._check_modern_options()

  def _check_modern_options(self):
    for name, allowed in (("position_embedding_type", POSITION_EMBEDDING_TYPES),
                          ("ffn_type", FFN_TYPES), ("norm_type", NORM_TYPES)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"BertConfig.{name} {getattr(self, name)!r} is not one of {allowed}")
    self._check_rope()
    self._check_window()
    if self.scan_layers and (self.prenorm or self.sliding_window):
      raise ValueError(
          "BertConfig.scan_layers=True needs identical layers, but prenorm (layer 0 has no "
          "attention norm) or sliding_window (local and global layers) make them differ; "
          "set scan_layers=False")

  def _check_rope(self):
    for name in ("rope_theta", "local_rope_theta"):
      if getattr(self, name) < 0:
        raise ValueError(f"BertConfig.{name} must be >= 0, got {getattr(self, name)!r}")
    if self.rope_theta > 0 and self.position_embedding_type == "absolute":
      raise ValueError(
          f"BertConfig.rope_theta={self.rope_theta} (rotary positions) together with "
          "position_embedding_type='absolute' (learned positions): use one; set "
          "position_embedding_type='none' for RoPE")
    if self.rope_theta == 0 and self.local_rope_theta > 0:
      raise ValueError("BertConfig.local_rope_theta is set but rope_theta is 0 (no RoPE)")
    if self.position_embedding_type == "none" and self.rope_theta == 0:
      raise ValueError("BertConfig.position_embedding_type='none' needs rope_theta > 0: "
                       "otherwise the model has no positional information")

  def _check_window(self):
    w = self.sliding_window
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
      raise ValueError(f"BertConfig.sliding_window must be an integer >= 0, got {w!r}")
    if w == 1:
      raise ValueError("BertConfig.sliding_window=1 lets a token attend only itself; use >= 2")
    if w > self.max_position_embeddings:
      raise ValueError(f"BertConfig.sliding_window={w} exceeds max_position_embeddings="
                       f"{self.max_position_embeddings}")
    n = self.global_every
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
      raise ValueError(f"BertConfig.global_every must be a positive integer (layer i is global "
                       f"iff i % global_every == 0), got {n!r}: the stack needs global layers")
    if w == 0 and n != 1:
      raise ValueError(f"BertConfig.global_every={n} has no effect without a sliding_window "
                       "(every layer is global); set sliding_window")
    if n > self.num_hidden_layers:
      raise ValueError(f"BertConfig.global_every={n} exceeds num_hidden_layers="
                       f"{self.num_hidden_layers}: layer 0 would be the only global layer")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the word-embedding table and MLM outputs: vocab_size rounded up."""
    return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

  def is_local_layer(self, index: int) -> bool:
    return self.sliding_window > 0 and index % self.global_every != 0

  @property
  def is_modern(self) -> bool:
    """ModernBERT-shaped: the layout `interop` exports as transformers' ModernBert*."""
    return self.prenorm and self.rope_theta > 0

  def replace(self, **changes) -> "BertConfig":
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
    if unknown:
      raise ValueError(f"unknown BertConfig field(s) {unknown}")
    return dataclasses.replace(self, **changes)


def bert_config(preset: str, **overrides: Any) -> BertConfig:
  """BERT's published size `preset` (tiny ... large), intermediate size 4H, with overrides."""
  if preset not in PRESETS:
    raise ValueError(f"unknown BERT preset {preset!r}; known presets: {list(PRESETS)}")
  sizes = dict(PRESETS[preset])
  sizes["intermediate_size"] = 4 * sizes["hidden_size"]
  return BertConfig().replace(**{**sizes, **overrides})


# ModernBERT's architecture (Warner et al. 2024; transformers' ModernBertConfig): the
# shapes of the published checkpoints, and a CPU-sized member of the family.
_MODERN_ARCHITECTURE: dict[str, Any] = dict(
    position_embedding_type="none", rope_theta=160_000.0, local_rope_theta=10_000.0,
    ffn_type="glu", hidden_act="gelu", norm_type="layernorm", prenorm=True, use_bias=False,
    norm_bias=False, layer_norm_eps=1e-5, type_vocab_size=0, vocab_multiple=64,
    next_sentence_head=False, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    sliding_window=128, global_every=3, max_position_embeddings=8192)
MODERN_PRESETS: dict[str, dict[str, Any]] = {
    "modernbert-tiny": dict(num_hidden_layers=3, hidden_size=128, num_attention_heads=2,
                            intermediate_size=256, vocab_size=8192, sliding_window=32,
                            max_position_embeddings=512, pad_token_id=0),
    "modernbert-base": dict(num_hidden_layers=22, hidden_size=768, num_attention_heads=12,
                            intermediate_size=1152, vocab_size=50368, pad_token_id=50283),
    "modernbert-large": dict(num_hidden_layers=28, hidden_size=1024, num_attention_heads=16,
                             intermediate_size=2624, vocab_size=50368, pad_token_id=50283),
}


def modern_config(preset: str, **overrides: Any) -> BertConfig:
  """A ModernBERT-shaped `preset` (modernbert-tiny/base/large), with overrides."""
  if preset not in MODERN_PRESETS:
    raise ValueError(f"unknown modern preset {preset!r}; known presets: {list(MODERN_PRESETS)}")
  return BertConfig().replace(**{**_MODERN_ARCHITECTURE, **MODERN_PRESETS[preset], **overrides})


def preset_config(preset: str, **overrides: Any) -> BertConfig:
  """Any preset by name: BERT's (`PRESETS`) or a modern one (`MODERN_PRESETS`)."""
  if preset in MODERN_PRESETS:
    return modern_config(preset, **overrides)
  return bert_config(preset, **overrides)


def _init(config: BertConfig, *axes: str):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(stddev=config.initializer_range), axes)


def _zeros(*axes: str):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _dtypes(config: BertConfig) -> dict[str, Any]:
  return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))


def _dense(config: BertConfig, features: int, in_axis: str, out_axis: str, name: str,
           use_bias: bool = True) -> nn.Dense:
  """A dense layer; `use_bias` False drops the bias (with config.use_bias False too)."""
  return nn.Dense(features, kernel_init=_init(config, in_axis, out_axis),
                  bias_init=_zeros(out_axis), name=name, use_bias=use_bias, **_dtypes(config))


def _layer_norm(config: BertConfig, name: str = "LayerNorm") -> nn.Module:
  """LayerNorm (bias per config.norm_bias) or RMSNorm, over the model width."""
  scale_init = nn.with_logical_partitioning(nn.initializers.ones_init(), (partitioning.EMBED,))
  if config.norm_type == "rmsnorm":
    return nn.RMSNorm(epsilon=config.layer_norm_eps, name=name, scale_init=scale_init,
                      **_dtypes(config))
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, name=name, use_bias=config.norm_bias,
      scale_init=scale_init, bias_init=_zeros(partitioning.EMBED), **_dtypes(config))


class DenseND(nn.Module):
  """A dense layer whose kernel keeps its multi-dimensional shape ([H, N, D], [N, D, H]).

  nn.DenseGeneral initialises a flat kernel and reshapes it, which breaks a
  logical-axes box of rank 3; here the kernel is created in its final shape.
  """
  config: BertConfig
  in_features: tuple[int, ...]
  out_features: tuple[int, ...]
  in_axes: tuple[str, ...]
  out_axes: tuple[str, ...]

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    kernel = self.param("kernel", _init(cfg, *self.in_axes, *self.out_axes),
                        self.in_features + self.out_features, param_dtype)
    n_in = len(self.in_features)
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), (contract, ((), ())))
    if not cfg.use_bias:
      return y
    bias = self.param("bias", _zeros(*self.out_axes), self.out_features, param_dtype)
    return y + bias.astype(dtype)


def _constrain(x: jax.Array, *axes: str) -> jax.Array:
  return nn.with_logical_constraint(x, axes)


class BertEmbeddings(nn.Module):
  """Word + learned position + token type embeddings, LayerNorm, dropout.

  Without learned positions (position_embedding_type='none': RoPE) or token types
  (type_vocab_size=0) those tables do not exist.
  """
  config: BertConfig

  def setup(self):
    cfg = self.config
    self.word_embeddings = nn.Embed(
        cfg.padded_vocab_size, cfg.hidden_size, embedding_init=_init(cfg, partitioning.VOCAB, partitioning.EMBED),
        **_dtypes(cfg))
    if cfg.position_embedding_type == "absolute":
      self.position_embeddings = nn.Embed(
          cfg.max_position_embeddings, cfg.hidden_size,
          embedding_init=_init(cfg, partitioning.POSITION, partitioning.EMBED), **_dtypes(cfg))
    if cfg.type_vocab_size:
      self.token_type_embeddings = nn.Embed(
          cfg.type_vocab_size, cfg.hidden_size, embedding_init=_init(cfg, partitioning.TOKEN_TYPE, partitioning.EMBED),
          **_dtypes(cfg))
    self.LayerNorm = _layer_norm(cfg)  # pylint: disable=invalid-name
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, position_ids=None, *, deterministic: bool):
    """position_ids [B, L] (packed rows restart them at 0 per instance); None: 0..L-1."""
    length = input_ids.shape[-1]
    if length > self.config.max_position_embeddings:
      raise ValueError(
          f"sequence length {length} exceeds max_position_embeddings "
          f"({self.config.max_position_embeddings})")
    x = self._lookup(self.word_embeddings, input_ids)
    if self.config.position_embedding_type == "absolute":
      if position_ids is None:
        x = x + self._lookup(self.position_embeddings, jnp.arange(length))[None]
      else:
        x = x + self._lookup(self.position_embeddings, position_ids)
    if self.config.type_vocab_size:
      x = x + self._lookup(self.token_type_embeddings, token_type_ids)
    x = self.LayerNorm(x)
    x = self.dropout(x, deterministic=deterministic)
    return _constrain(x, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_EMBED)

  def _lookup(self, embed: nn.Embed, ids):
    # Gather rows from the whole table, as FSDP gathers any weight before use:
    # a gather from a table sharded over vocab (tensor) or embed (fsdp) into a
    # batch sharded over fsdp makes GSPMD replicate and re-partition the output.
    table = nn.with_logical_constraint(embed.embedding, (None, None))
    return jnp.take(table, ids, axis=0).astype(jnp.dtype(self.config.dtype))

  def attend(self, x):
    """Logits against the word embeddings: the tied MLM decoder."""
    return self.word_embeddings.attend(x)


def _xla_attention(q, k, v, mask, dropout=None):
  """Softmax attention written out, so attention-probability dropout applies.

  q, k, v: [B, L, N, D]; mask: [B, 1, 1, L] or, for packed rows, the block-diagonal
  [B, 1, L, L] bool (True = attend); dropout: a
  function applied to the probabilities, or None. The softmax runs in float32
  whatever the compute dtype.
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqnd,bknd->bnqk", q * jnp.asarray(scale, q.dtype), k)
  logits = jnp.where(mask, logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  if dropout is not None:
    probs = dropout(probs)
  return jnp.einsum("bnqk,bknd->bqnd", probs, v)


def fused_attention(q, k, v, mask, implementation: str | None = "cudnn"):
  """jax.nn.dot_product_attention with the same layout and mask as `_xla_attention`.

  With implementation="cudnn" this is the fused (flash) kernel on NVIDIA GPUs;
  it has no attention-probability dropout.
  """
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


def local_attention(q, k, v, q_segment, k_segment, half_window: int, dropout=None):
  """Sliding-window attention whose cost grows with the window, not the sequence.

  Query i attends key j iff |i - j| <= half_window and q_segment[i] == k_segment[j]
  (segments [B, L] int: the instance ids of packed rows, or 1 for every query and
  the attention mask for keys). The sequence is cut into blocks of `half_window`
  tokens; a query block can only reach its own block and the two next to it, so
  the scores are [B, N, L / c, c, 3c] with c = half_window: linear in L. Same
  layout, float32 softmax and dropout hook as `_xla_attention`.
  """
  b, length, n, d = q.shape
  c = max(half_window, 1)
  nb = -(-length // c)
  pad = nb * c - length

  def blocks(x, fill):
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
    return x.reshape((b, nb, c) + x.shape[2:])

  def neighbours(xb, fill):
    # [B, nb, c, ...] -> [B, nb, 3c, ...]: blocks i-1, i, i+1 side by side.
    edge = jnp.full_like(xb[:, :1], fill)
    prev = jnp.concatenate([edge, xb[:, :-1]], axis=1)
    nxt = jnp.concatenate([xb[:, 1:], edge], axis=1)
    return jnp.concatenate([prev, xb, nxt], axis=2)

  qb = blocks(q * jnp.asarray(d ** -0.5, q.dtype), 0)
  kn, vn = neighbours(blocks(k, 0), 0), neighbours(blocks(v, 0), 0)
  # Padding and out-of-range neighbours get segments that match nothing.
  qs = blocks(q_segment.astype(jnp.int32), -1)
  ks = neighbours(blocks(k_segment.astype(jnp.int32), -2), -2)
  q_pos = jnp.arange(nb * c).reshape(nb, c)
  k_pos = q_pos[:, :1] - c + jnp.arange(3 * c)[None]
  band = jnp.abs(q_pos[:, :, None] - k_pos[:, None, :]) <= half_window
  mask = band[None] & (qs[:, :, :, None] == ks[:, :, None, :])  # [B, nb, c, 3c]
  logits = jnp.einsum("bxqnd,bxknd->bnxqk", qb, kn)
  logits = jnp.where(mask[:, None], logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  if dropout is not None:
    probs = dropout(probs)
  out = jnp.einsum("bnxqk,bxknd->bxqnd", probs, vn).reshape(b, nb * c, n, d)
  return out[:, :length]


def band_mask(q_segment, k_segment, half_window: int) -> jax.Array:
  """The [B, 1, L, L] boolean mask `local_attention` applies, for a full attention."""
  length = q_segment.shape[-1]
  pos = jnp.arange(length)
  band = jnp.abs(pos[:, None] - pos[None, :]) <= half_window
  return (band[None] & (q_segment[:, :, None] == k_segment[:, None, :]))[:, None]


def rope_tables(position_ids: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """cos, sin [B, L, 1, D] (float32) of rotary embeddings at `position_ids` [B or 1, L].

  The rotate-half layout (dimension i pairs with i + D/2), as transformers' Llama /
  ModernBERT; frequencies theta^(-2i/D).
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotates x [B, L, N, D] by the (cos, sin) of `rope_tables`, in float32."""
  cos, sin = rope
  xf = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  return (xf * cos + rotated * sin).astype(x.dtype)


class BertSelfAttention(nn.Module):
  """Multi-head self-attention; `local` layers attend a sliding window (see `local_attention`)."""
  config: BertConfig
  local: bool = False

  @nn.compact
  def __call__(self, x, ctx, *, deterministic: bool):
    cfg = self.config
    heads, head_dim = cfg.num_attention_heads, cfg.head_dim

    def project(name):
      y = DenseND(cfg, (cfg.hidden_size,), (heads, head_dim), (partitioning.EMBED,), (partitioning.HEADS, partitioning.KV),
                  name=name)(x)
      return _constrain(y, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_HEADS, partitioning.ACT_KV)

    q, k, v = project("query"), project("key"), project("value")
    rope = ctx.get("rope_local" if self.local else "rope_global")
    if rope is not None:
      q, k = apply_rope(q, rope), apply_rope(k, rope)
    if cfg.prefix_length:
      if self.local:
        raise ValueError("prefix tuning (prefix_length) is not supported with local attention "
                         "layers (sliding_window): their banded computation has no place for "
                         "prefixes; use another PEFT method")
      k, v, mask = self._prepend_prefix(k, v, ctx["mask"])
      ctx = {**ctx, "mask": mask}
    if cfg.attention_impl == "cudnn":
      if not deterministic and cfg.attention_probs_dropout_prob > 0:
        raise ValueError(
            "attention_impl='cudnn' has no attention-probability dropout; set "
            "attention_probs_dropout_prob=0.0 to train with it (or use attention_impl='xla')")
      out = self._fused(q, k, v, ctx)
    else:
      dropout = functools.partial(nn.Dropout(cfg.attention_probs_dropout_prob),
                                  deterministic=deterministic)
      if self.local:
        out = local_attention(q, k, v, ctx["q_segment"], ctx["k_segment"],
                              cfg.sliding_window // 2, dropout)
      else:
        out = _xla_attention(q, k, v, ctx["mask"], dropout)
    return _constrain(out, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_HEADS, partitioning.ACT_KV)

  def _fused(self, q, k, v, ctx):
    if not self.local:
      return fused_attention(q, k, v, ctx["mask"], implementation="cudnn")
    # The fused kernel's own window: (left, right) offsets, inclusive.
    half = self.config.sliding_window // 2
    return jax.nn.dot_product_attention(q, k, v, mask=ctx["mask"], local_window_size=(half, half),
                                        implementation="cudnn")

  def _prepend_prefix(self, k, v, mask):
    """Prefix tuning: `prefix_length` trained key and value vectors per head, put before
    the sequence's own, and seen by every query (the mask grows by that many True
    columns; the sequence's padding columns stay masked)."""
    cfg = self.config
    shape = (cfg.prefix_length, cfg.num_attention_heads, cfg.head_dim)
    batch = k.shape[0]

    def prefix(name, x):
      p = self.param(name, _init(cfg, partitioning.PREFIX, partitioning.HEADS, partitioning.KV), shape, jnp.dtype(cfg.param_dtype))
      return jnp.concatenate([jnp.broadcast_to(p.astype(x.dtype)[None], (batch,) + shape), x], 1)

    seen = jnp.ones(mask.shape[:-1] + (cfg.prefix_length,), bool)
    return (prefix("prefix_key", k), prefix("prefix_value", v),
            jnp.concatenate([jnp.broadcast_to(seen, (batch,) + seen.shape[1:]), mask], -1))


class BottleneckAdapter(nn.Module):
  """Houlsby et al. (2019)'s adapter: x + up(swish(down(x))), down H -> adapter_size.

  `up` starts at zero, so the adapter starts as the identity (the pretrained function
  exactly); swish is AdapterHub's non-linearity for this (double_seq_bn) layout.
  """
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    h = nn.Dense(cfg.adapter_size, kernel_init=_init(cfg, partitioning.EMBED, partitioning.ADAPTER),
                 bias_init=_zeros(partitioning.ADAPTER), name="down", **_dtypes(cfg))(x)
    h = nn.Dense(cfg.hidden_size, kernel_init=_zeros(partitioning.ADAPTER, partitioning.EMBED),
                 bias_init=_zeros(partitioning.EMBED), name="up", **_dtypes(cfg))(jax.nn.swish(h))
    return x + h


class BertSelfOutput(nn.Module):
  """Output projection of the attention (or the MLP), dropout, residual, post-LayerNorm.

  With config.prenorm the block's norm sits before it (in `BertLayer`), not here.
  """
  config: BertConfig
  in_features: tuple[int, ...]
  in_axes: tuple[str, ...]

  @nn.compact
  def __call__(self, x, residual, *, deterministic: bool):
    cfg = self.config
    x = DenseND(cfg, self.in_features, (cfg.hidden_size,), self.in_axes, (partitioning.EMBED,), name="dense")(x)
    x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
    if cfg.adapter_size:  # after each sublayer's projection, before the residual (Houlsby)
      x = BottleneckAdapter(cfg, name="adapter")(x)
    x = x + residual
    if not cfg.prenorm:
      x = _layer_norm(cfg)(x)
    return _constrain(x, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_EMBED)


class BertAttention(nn.Module):
  """Self-attention on `x`, output projection, residual onto `residual` (default: x)."""
  config: BertConfig
  local: bool = False

  @nn.compact
  def __call__(self, x, ctx, *, deterministic: bool, residual=None):
    y = BertSelfAttention(self.config, self.local, name="self")(x, ctx, deterministic=deterministic)
    return BertSelfOutput(
        self.config, (self.config.num_attention_heads, self.config.head_dim), (partitioning.HEADS, partitioning.KV),
        name="output")(
        y, x if residual is None else residual, deterministic=deterministic)


class BertIntermediate(nn.Module):
  """act(x W) or, with ffn_type='glu', act(x W) * (x W_gate) (GeGLU / SwiGLU)."""
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    y = _dense(cfg, cfg.intermediate_size, partitioning.EMBED, partitioning.MLP, "dense", cfg.use_bias)(x)
    y = _ACTIVATIONS[cfg.hidden_act](y)
    if cfg.ffn_type == "glu":
      y = y * _dense(cfg, cfg.intermediate_size, partitioning.EMBED, partitioning.MLP, "gate", cfg.use_bias)(x)
    return _constrain(y, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_MLP)


class BertLayer(nn.Module):
  """One transformer block; (carry, ctx) -> (carry, None) for nn.scan.

  Post-LayerNorm (BERT) by default; with config.prenorm, x + attn(norm(x)) then
  x + ffn(norm(x)), where layer 0 has no attention norm (the embedding norm
  precedes it), as ModernBERT. `ctx` holds the masks and rotary tables
  (`BertModel._attention_context`).
  """
  config: BertConfig
  deterministic: bool = True
  index: int = 0

  @nn.compact
  def __call__(self, x, ctx):
    cfg, det = self.config, self.deterministic
    local = cfg.is_local_layer(self.index)
    if not cfg.prenorm:
      x = BertAttention(cfg, local, name="attention")(x, ctx, deterministic=det)
      y = BertIntermediate(cfg, name="intermediate")(x)
      x = BertSelfOutput(cfg, (cfg.intermediate_size,), (partitioning.MLP,), name="output")(
          y, x, deterministic=det)
      return x, None
    h = x if self.index == 0 else _layer_norm(cfg, "attention_norm")(x)
    x = BertAttention(cfg, local, name="attention")(h, ctx, deterministic=det, residual=x)
    y = BertIntermediate(cfg, name="intermediate")(_layer_norm(cfg, "mlp_norm")(x))
    x = BertSelfOutput(cfg, (cfg.intermediate_size,), (partitioning.MLP,), name="output")(
        y, x, deterministic=det)
    return x, None


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    # Keep the matmul outputs, recompute the cheap elementwise work.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class BertEncoder(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, ctx, *, deterministic: bool):
    cfg = self.config
    layer = BertLayer
    if cfg.remat_policy != "none":
      layer = nn.remat(layer, policy=_REMAT[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=nn.broadcast, length=cfg.num_hidden_layers,
                      metadata_params={nn.PARTITION_NAME: partitioning.LAYERS})
      x, _ = stack(cfg, deterministic, name="layers")(x, ctx)
      return x
    for i in range(cfg.num_hidden_layers):
      x, _ = layer(cfg, deterministic, i, name=f"layer_{i}")(x, ctx)
    if cfg.prenorm:
      x = _layer_norm(cfg, "final_norm")(x)
    return x


class BertPooler(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, sequence_output, cls_positions=None):
    """[B, L, H] -> [B, H] from position 0, or [B, K, H] from each packed instance's
    [CLS] at `cls_positions` [B, K]."""
    cfg = self.config
    cls = (sequence_output[:, 0] if cls_positions is None
           else gather_positions(sequence_output, cls_positions))
    return jnp.tanh(_dense(cfg, cfg.hidden_size, partitioning.EMBED, partitioning.HIDDEN, "dense")(cls))


def attention_mask_4d(attention_mask: jax.Array, instance_ids: jax.Array | None = None
                      ) -> jax.Array:
  """The boolean mask the attention takes (True = attend).

  Unpacked: [B, 1, 1, L], every token attends the real tokens of its row. Packed
  (`instance_ids` [B, L] int, 1..K per instance, 0 for padding): [B, 1, L, L], a token
  attends only the tokens of its own instance, so instances sharing a row never see
  each other; padding attends padding (no query row is empty). `attention_mask` is
  then implied by instance_ids > 0 and not read.
  """
  if instance_ids is None:
    return (attention_mask > 0)[:, None, None, :]
  return (instance_ids[:, :, None] == instance_ids[:, None, :])[:, None]


class BertModel(nn.Module):
  """The encoder: (input_ids, token_type_ids, attention_mask) -> (sequence, pooled)."""
  config: BertConfig
  add_pooling_layer: bool = True

  def setup(self):
    self.embeddings = BertEmbeddings(self.config)
    self.encoder = BertEncoder(self.config)
    if self.add_pooling_layer:
      self.pooler = BertPooler(self.config)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *, deterministic: bool = True,
               position_ids=None, instance_ids=None, cls_positions=None):
    """Shapes: ids and masks [B, L] int; returns ([B, L, H], [B, H] or None).

    Packed rows (several instances per row) add position_ids and instance_ids [B, L]
    (see `attention_mask_4d`) and cls_positions [B, K]; pooled is then [B, K, H].
    """
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic=deterministic)
    ctx = self._attention_context(attention_mask, position_ids, instance_ids)
    x = self.encoder(x, ctx, deterministic=deterministic)
    pooled = self.pooler(x, cls_positions) if self.add_pooling_layer else None
    return x, pooled

  def _attention_context(self, attention_mask, position_ids, instance_ids) -> dict[str, Any]:
    """What every layer's attention reads: the mask, and for the modern options the
    segments of the local layers and the rotary tables of each layer kind."""
    cfg = self.config
    ctx = {"mask": attention_mask_4d(attention_mask, instance_ids)}
    if cfg.sliding_window:
      if instance_ids is None:
        ctx["q_segment"] = jnp.ones_like(attention_mask, jnp.int32)
        ctx["k_segment"] = (attention_mask > 0).astype(jnp.int32)
      else:
        ctx["q_segment"] = ctx["k_segment"] = instance_ids.astype(jnp.int32)
    if cfg.rope_theta:
      positions = (jnp.arange(attention_mask.shape[-1])[None] if position_ids is None
                   else position_ids)
      ctx["rope_global"] = rope_tables(positions, cfg.head_dim, cfg.rope_theta)
      if cfg.sliding_window:
        ctx["rope_local"] = rope_tables(positions, cfg.head_dim,
                                        cfg.local_rope_theta or cfg.rope_theta)
    return ctx

  def attend(self, x):
    return self.embeddings.attend(x)


def gather_positions(sequence: jax.Array, positions: jax.Array) -> jax.Array:
  """[B, L, H] at [B, P] positions -> [B, P, H]."""
  return jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32), axis=1)


class _PredictionTransform(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    x = _dense(cfg, cfg.hidden_size, partitioning.EMBED, partitioning.HIDDEN, "dense", cfg.use_bias)(x)
    x = _ACTIVATIONS[cfg.hidden_act](x)
    return _layer_norm(cfg)(x)


class _Predictions(nn.Module):
  """MLM head: transform, then the decoder tied to the word embeddings, plus a bias."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, attend):
    cfg = self.config
    x = _PredictionTransform(cfg, name="transform")(x)
    bias = self.param("bias", _zeros(partitioning.VOCAB), (cfg.padded_vocab_size,), jnp.dtype(cfg.param_dtype))
    logits = attend(x) + bias.astype(x.dtype)
    return _constrain(logits, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_VOCAB)


class _PreTrainingHeads(nn.Module):
  """transformers' `cls` scope: predictions (MLM) and seq_relationship (NSP)."""
  config: BertConfig

  @nn.compact
  def __call__(self, sequence, pooled, attend):
    mlm_logits = _Predictions(self.config, name="predictions")(sequence, attend)
    if pooled is None:  # MLM only (config.next_sentence_head False)
      return mlm_logits, None
    nsp_logits = _dense(self.config, 2, partitioning.EMBED, partitioning.CLASSES, "seq_relationship")(pooled)
    return mlm_logits, nsp_logits


class BertForPreTraining(nn.Module):
  """BERT with its masked-LM and next-sentence heads; inputs are the batch contract."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, masked_lm_positions=None, *,
               deterministic: bool = True, position_ids=None, instance_ids=None,
               cls_positions=None):
    """Returns (mlm_logits, nsp_logits).

    mlm_logits are [B, P, V] at `masked_lm_positions` ([B, P] int): the sequence
    is gathered before the head, so the V-wide decoder runs on P, not L, rows.
    With masked_lm_positions=None they are [B, L, V] (inference, export checks).
    nsp_logits are [B, 2] (index 0: B follows A). Both in the compute dtype.
    Packed rows (position_ids, instance_ids [B, L], cls_positions [B, K]; see
    `BertModel`) give nsp_logits [B, K, 2], one per instance slot. Without a
    next-sentence head (config.next_sentence_head False: MLM-only pretraining)
    there is no pooler and nsp_logits is None.
    """
    bert = BertModel(self.config, add_pooling_layer=self.config.next_sentence_head, name="bert")
    sequence, pooled = bert(input_ids, token_type_ids, attention_mask, deterministic=deterministic,
                            position_ids=position_ids, instance_ids=instance_ids,
                            cls_positions=cls_positions)
    if masked_lm_positions is not None:
      sequence = gather_positions(sequence, masked_lm_positions)
    return _PreTrainingHeads(self.config, name="cls")(sequence, pooled, bert.attend)


def _encode_for_task(config: BertConfig, input_ids, token_type_ids, attention_mask,
                     deterministic: bool, pooled: bool):
  """The encoder under a task head: (sequence, pooled [CLS] or None).

  BERT: the tanh pooler pools. A ModernBERT-shaped config (`is_modern`) has no pooler;
  like transformers' ModernBertFor* it runs its prediction head (dense, activation,
  norm; scope `head`) on the [CLS] state (pooled) or on every token (sequence).
  Called inside a task module's compact `__call__`, whose scope the modules join.
  """
  modern = config.is_modern
  sequence, pooled_out = BertModel(config, add_pooling_layer=pooled and not modern, name="bert")(
      input_ids, token_type_ids, attention_mask, deterministic=deterministic)
  if not modern:
    return sequence, pooled_out
  head = _PredictionTransform(config, name="head")
  if pooled:
    return sequence, head(sequence[:, 0])
  return head(sequence), None


class BertForSequenceClassification(nn.Module):
  """Pooled output, dropout, a linear classifier ([B, num_labels]; 1 label = regression)."""
  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool = True):
    _, pooled = _encode_for_task(self.config, input_ids, token_type_ids, attention_mask,
                                 deterministic, pooled=True)
    pooled = nn.Dropout(self.config.hidden_dropout_prob)(pooled, deterministic=deterministic)
    return _dense(self.config, self.num_labels, partitioning.EMBED, partitioning.CLASSES, "classifier")(pooled)


class BertForTokenClassification(nn.Module):
  """Sequence output, dropout, a linear classifier per token ([B, L, num_labels])."""
  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool = True):
    sequence, _ = _encode_for_task(self.config, input_ids, token_type_ids, attention_mask,
                                   deterministic, pooled=False)
    sequence = nn.Dropout(self.config.hidden_dropout_prob)(sequence, deterministic=deterministic)
    return _dense(self.config, self.num_labels, partitioning.EMBED, partitioning.CLASSES, "classifier")(sequence)


class BertForQuestionAnswering(nn.Module):
  """Extractive QA: one dense layer on each token, start and end logits ([B, L] each).

  Named as transformers' `BertForQuestionAnswering` (`bert` without a pooler,
  `qa_outputs` a Linear(H, 2) whose output 0 is the start, 1 the end logit);
  like it, no dropout before the head. A modern encoder's `head` runs first, as in
  ModernBertForQuestionAnswering (whose Linear is named `classifier`).
  """
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool = True):
    sequence, _ = _encode_for_task(self.config, input_ids, token_type_ids, attention_mask,
                                   deterministic, pooled=False)
    logits = _dense(self.config, 2, partitioning.EMBED, partitioning.CLASSES, "qa_outputs")(sequence)
    return logits[..., 0], logits[..., 1]


def dummy_inputs(config: BertConfig, batch_size: int = 1, seq_len: int = 8,
                 num_predictions: int | None = 2) -> dict[str, jax.Array]:
  """Zero inputs of the right shapes and dtypes, for `init` and `eval_shape`."""
  ids = jnp.zeros((batch_size, seq_len), jnp.int32)
  inputs = dict(input_ids=ids, token_type_ids=ids, attention_mask=jnp.ones_like(ids))
  if num_predictions is not None:
    inputs["masked_lm_positions"] = jnp.zeros((batch_size, num_predictions), jnp.int32)
  return inputs
