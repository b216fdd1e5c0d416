"""BERT in Flax linen: the encoder, the pretraining heads and the task heads.

The layer maths follow the original BERT (and transformers' `modeling_bert`):
post-LayerNorm residual blocks, exact (erf) GELU, learned absolute positions,
a tanh pooler on [CLS], an MLM decoder tied to the word embeddings. The module
tree mirrors transformers' names (`bert/embeddings/word_embeddings`,
`bert/encoder/layer_0/attention/self/query`, `cls/predictions/transform`, ...)
so that `interop.py` is a renaming, not a translation.

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
}
_DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("xla", "cudnn")
REMAT_POLICIES = ("none", "full", "dots")


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

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
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
    if not 0 <= self.pad_token_id < self.vocab_size:
      raise ValueError(f"BertConfig.pad_token_id {self.pad_token_id} is outside the vocabulary")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

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


def _init(config: BertConfig, *axes: str):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(stddev=config.initializer_range), axes)


def _zeros(*axes: str):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _dtypes(config: BertConfig) -> dict[str, Any]:
  return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))


def _dense(config: BertConfig, features: int, in_axis: str, out_axis: str, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=_init(config, in_axis, out_axis),
                  bias_init=_zeros(out_axis), name=name, **_dtypes(config))


def _layer_norm(config: BertConfig, name: str = "LayerNorm") -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (partitioning.EMBED,)),
      bias_init=_zeros(partitioning.EMBED), **_dtypes(config))


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
    bias = self.param("bias", _zeros(*self.out_axes), self.out_features, param_dtype)
    n_in = len(self.in_features)
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), (contract, ((), ())))
    return y + bias.astype(dtype)


def _constrain(x: jax.Array, *axes: str) -> jax.Array:
  return nn.with_logical_constraint(x, axes)


class BertEmbeddings(nn.Module):
  """Word + learned position + token type embeddings, LayerNorm, dropout."""
  config: BertConfig

  def setup(self):
    cfg = self.config
    self.word_embeddings = nn.Embed(
        cfg.vocab_size, cfg.hidden_size,
        embedding_init=_init(cfg, partitioning.VOCAB, partitioning.EMBED), **_dtypes(cfg))
    self.position_embeddings = nn.Embed(
        cfg.max_position_embeddings, cfg.hidden_size,
        embedding_init=_init(cfg, partitioning.POSITION, partitioning.EMBED), **_dtypes(cfg))
    self.token_type_embeddings = nn.Embed(
        cfg.type_vocab_size, cfg.hidden_size,
        embedding_init=_init(cfg, partitioning.TOKEN_TYPE, partitioning.EMBED), **_dtypes(cfg))
    self.LayerNorm = _layer_norm(cfg)  # pylint: disable=invalid-name
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, position_ids=None, *, deterministic: bool):
    """position_ids [B, L] (packed rows restart them at 0 per instance); None: 0..L-1."""
    length = input_ids.shape[-1]
    if length > self.config.max_position_embeddings:
      raise ValueError(
          f"sequence length {length} exceeds max_position_embeddings "
          f"({self.config.max_position_embeddings})")
    if position_ids is None:
      positions = self._lookup(self.position_embeddings, jnp.arange(length))[None]
    else:
      positions = self._lookup(self.position_embeddings, position_ids)
    x = (self._lookup(self.word_embeddings, input_ids) + positions
         + self._lookup(self.token_type_embeddings, token_type_ids))
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


class BertSelfAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool):
    cfg = self.config
    heads, head_dim = cfg.num_attention_heads, cfg.head_dim

    def project(name):
      y = DenseND(cfg, (cfg.hidden_size,), (heads, head_dim), (partitioning.EMBED,),
                  (partitioning.HEADS, partitioning.KV), name=name)(x)
      return _constrain(y, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_HEADS,
                        partitioning.ACT_KV)

    q, k, v = project("query"), project("key"), project("value")
    if cfg.attention_impl == "cudnn":
      if not deterministic and cfg.attention_probs_dropout_prob > 0:
        raise ValueError(
            "attention_impl='cudnn' has no attention-probability dropout; set "
            "attention_probs_dropout_prob=0.0 to train with it (or use attention_impl='xla')")
      out = fused_attention(q, k, v, mask, implementation="cudnn")
    else:
      dropout = functools.partial(nn.Dropout(cfg.attention_probs_dropout_prob),
                                  deterministic=deterministic)
      out = _xla_attention(q, k, v, mask, dropout)
    return _constrain(out, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_HEADS,
                      partitioning.ACT_KV)


class BertSelfOutput(nn.Module):
  """Output projection of the attention (or the MLP), dropout, residual, post-LayerNorm."""
  config: BertConfig
  in_features: tuple[int, ...]
  in_axes: tuple[str, ...]

  @nn.compact
  def __call__(self, x, residual, *, deterministic: bool):
    cfg = self.config
    x = DenseND(cfg, self.in_features, (cfg.hidden_size,), self.in_axes, (partitioning.EMBED,),
                name="dense")(x)
    x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
    x = _layer_norm(cfg)(x + residual)
    return _constrain(x, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_EMBED)


class BertAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool):
    y = BertSelfAttention(self.config, name="self")(x, mask, deterministic=deterministic)
    return BertSelfOutput(
        self.config, (self.config.num_attention_heads, self.config.head_dim),
        (partitioning.HEADS, partitioning.KV), name="output")(
        y, x, deterministic=deterministic)


class BertIntermediate(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    x = _dense(cfg, cfg.intermediate_size, partitioning.EMBED, partitioning.MLP, "dense")(x)
    x = _ACTIVATIONS[cfg.hidden_act](x)
    return _constrain(x, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_MLP)


class BertLayer(nn.Module):
  """One post-LayerNorm transformer block; (carry, mask) -> (carry, None) for nn.scan."""
  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, mask):
    x = BertAttention(self.config, name="attention")(x, mask, deterministic=self.deterministic)
    y = BertIntermediate(self.config, name="intermediate")(x)
    x = BertSelfOutput(
        self.config, (self.config.intermediate_size,), (partitioning.MLP,), name="output")(
            y, x, deterministic=self.deterministic)
    return x, None


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    # Keep the matmul outputs, recompute the cheap elementwise work.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class BertEncoder(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool):
    cfg = self.config
    layer = BertLayer
    if cfg.remat_policy != "none":
      layer = nn.remat(layer, policy=_REMAT[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=nn.broadcast, length=cfg.num_hidden_layers,
                      metadata_params={nn.PARTITION_NAME: partitioning.LAYERS})
      x, _ = stack(cfg, deterministic, name="layers")(x, mask)
      return x
    for i in range(cfg.num_hidden_layers):
      x, _ = layer(cfg, deterministic, name=f"layer_{i}")(x, mask)
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
    dense = _dense(cfg, cfg.hidden_size, partitioning.EMBED, partitioning.HIDDEN, "dense")
    return jnp.tanh(dense(cls))


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
    mask = attention_mask_4d(attention_mask, instance_ids)
    x = self.encoder(x, mask, deterministic=deterministic)
    pooled = self.pooler(x, cls_positions) if self.add_pooling_layer else None
    return x, pooled

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
    x = _dense(cfg, cfg.hidden_size, partitioning.EMBED, partitioning.HIDDEN, "dense")(x)
    x = _ACTIVATIONS[cfg.hidden_act](x)
    return _layer_norm(cfg)(x)


class _Predictions(nn.Module):
  """MLM head: transform, then the decoder tied to the word embeddings, plus a bias."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, attend):
    cfg = self.config
    x = _PredictionTransform(cfg, name="transform")(x)
    bias = self.param("bias", _zeros(partitioning.VOCAB), (cfg.vocab_size,),
                      jnp.dtype(cfg.param_dtype))
    logits = attend(x) + bias.astype(x.dtype)
    return _constrain(logits, partitioning.ACT_BATCH, partitioning.ACT_LEN, partitioning.ACT_VOCAB)


class _PreTrainingHeads(nn.Module):
  """transformers' `cls` scope: predictions (MLM) and seq_relationship (NSP)."""
  config: BertConfig

  @nn.compact
  def __call__(self, sequence, pooled, attend):
    mlm_logits = _Predictions(self.config, name="predictions")(sequence, attend)
    nsp_logits = _dense(self.config, 2, partitioning.EMBED, partitioning.CLASSES,
                        "seq_relationship")(pooled)
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
    `BertModel`) give nsp_logits [B, K, 2], one per instance slot.
    """
    bert = BertModel(self.config, name="bert")
    sequence, pooled = bert(input_ids, token_type_ids, attention_mask, deterministic=deterministic,
                            position_ids=position_ids, instance_ids=instance_ids,
                            cls_positions=cls_positions)
    if masked_lm_positions is not None:
      sequence = gather_positions(sequence, masked_lm_positions)
    return _PreTrainingHeads(self.config, name="cls")(sequence, pooled, bert.attend)


class BertForSequenceClassification(nn.Module):
  """Pooled output, dropout, a linear classifier ([B, num_labels]; 1 label = regression)."""
  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool = True):
    _, pooled = BertModel(self.config, name="bert")(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    pooled = nn.Dropout(self.config.hidden_dropout_prob)(pooled, deterministic=deterministic)
    return _dense(self.config, self.num_labels, partitioning.EMBED, partitioning.CLASSES,
                  "classifier")(pooled)


class BertForTokenClassification(nn.Module):
  """Sequence output, dropout, a linear classifier per token ([B, L, num_labels])."""
  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool = True):
    sequence, _ = BertModel(self.config, add_pooling_layer=False, name="bert")(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    sequence = nn.Dropout(self.config.hidden_dropout_prob)(sequence, deterministic=deterministic)
    return _dense(self.config, self.num_labels, partitioning.EMBED, partitioning.CLASSES,
                  "classifier")(sequence)


class BertForQuestionAnswering(nn.Module):
  """Extractive QA: one dense layer on each token, start and end logits ([B, L] each).

  Named as transformers' `BertForQuestionAnswering` (`bert` without a pooler,
  `qa_outputs` a Linear(H, 2) whose output 0 is the start, 1 the end logit);
  like it, no dropout before the head.
  """
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool = True):
    sequence, _ = BertModel(self.config, add_pooling_layer=False, name="bert")(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    logits = _dense(self.config, 2, partitioning.EMBED, partitioning.CLASSES,
                    "qa_outputs")(sequence)
    return logits[..., 0], logits[..., 1]


def dummy_inputs(config: BertConfig, batch_size: int = 1, seq_len: int = 8,
                 num_predictions: int | None = 2) -> dict[str, jax.Array]:
  """Zero inputs of the right shapes and dtypes, for `init` and `eval_shape`."""
  ids = jnp.zeros((batch_size, seq_len), jnp.int32)
  inputs = dict(input_ids=ids, token_type_ids=ids, attention_mask=jnp.ones_like(ids))
  if num_predictions is not None:
    inputs["masked_lm_positions"] = jnp.zeros((batch_size, num_predictions), jnp.int32)
  return inputs
