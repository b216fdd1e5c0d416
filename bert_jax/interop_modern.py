"""transformers' ModernBERT <-> bert-jax's modern encoder: config.json and state dicts.

A ModernBERT-shaped `BertConfig` (`model.modern_config`: RoPE, GeGLU, pre-LayerNorm
without biases, local/global attention) keeps bert-jax's module tree, so this is a
table rather than a renaming: ModernBERT fuses what we keep apart and we split it on
the way in, joining it on the way out:

  model.layers.i.attn.Wqkv   [3HD, H]  <- attention/self/{query,key,value} [H, N, D]
  model.layers.i.mlp.Wi      [2I, H]   <- intermediate/{dense,gate} [H, I] (input half first)
  decoder.weight                       tied to model.embeddings.tok_embeddings
  decoder.bias                         <- cls/predictions/bias

Every config.json option either maps onto a `BertConfig` field, is checked to be a
value we compute identically, or is refused by name; none is dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bert_jax import model as model_lib

MODEL_TYPE = "modernbert"
_AS_IS = -1  # `_spec`'s n_in of a tensor stored the same way on both sides
MLM_ARCHITECTURE = "ModernBertForMaskedLM"

# config.json keys that do not change the computed function (ids of special tokens,
# bookkeeping, training-time switches of transformers' own implementation).
_NEUTRAL_KEYS = frozenset((
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
    "_name_or_path", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id",
    "initializer_cutoff_factor", "deterministic_flash_attn", "sparse_prediction",
    "sparse_pred_ignore_index", "reference_compile", "repad_logits_with_grad",
    "gradient_checkpointing", "output_attentions", "output_hidden_states", "return_dict",
    "is_encoder_decoder", "chunk_size_feed_forward", "id2label", "label2id", "num_labels",
    "problem_type", "tokenizer_class", "use_cache",
    # Present in the published ModernBERT config.json files, unread by the model code.
    "layer_norm_eps", "position_embedding_type"))
# Keys mapped or checked below.
_HANDLED_KEYS = frozenset((
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "hidden_activation", "max_position_embeddings",
    "initializer_range", "norm_eps", "norm_bias", "pad_token_id", "attention_bias",
    "mlp_bias", "classifier_bias", "classifier_activation", "decoder_bias",
    "tie_word_embeddings", "attention_dropout", "embedding_dropout", "mlp_dropout",
    "classifier_dropout", "classifier_pooling", "local_attention", "layer_types",
    "global_attn_every_n_layers", "rope_parameters", "global_rope_theta", "local_rope_theta",
    "rope_scaling", "rope_theta"))


# ----------------------------------------------------------------------------- config


def config_to_hf(config: model_lib.BertConfig) -> dict[str, Any]:
  """config.json of transformers' ModernBertForMaskedLM for a ModernBERT-shaped config."""
  problems = _unrepresentable(config)
  if problems:
    raise ValueError("this model cannot be written as a transformers ModernBERT: "
                     + "; ".join(problems))
  layer_types = ["sliding_attention" if config.is_local_layer(i) else "full_attention"
                 for i in range(config.num_hidden_layers)]
  local_theta = config.local_rope_theta or config.rope_theta
  return dict(
      architectures=[MLM_ARCHITECTURE], model_type=MODEL_TYPE, dtype="float32",
      vocab_size=config.padded_vocab_size, hidden_size=config.hidden_size,
      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
      num_attention_heads=config.num_attention_heads, hidden_activation=config.hidden_act,
      classifier_activation=config.hidden_act,
      max_position_embeddings=config.max_position_embeddings,
      initializer_range=config.initializer_range, norm_eps=config.layer_norm_eps,
      norm_bias=config.norm_bias, pad_token_id=config.pad_token_id,
      # The special-token ids are the tokenizer's business; ModernBertConfig's defaults
      # (50281, ...) would lie outside a smaller vocabulary.
      bos_token_id=None, eos_token_id=None, cls_token_id=None, sep_token_id=None,
      attention_bias=config.use_bias, mlp_bias=config.use_bias, classifier_bias=config.use_bias,
      decoder_bias=True, tie_word_embeddings=True, classifier_pooling="cls",
      attention_dropout=config.attention_probs_dropout_prob,
      embedding_dropout=config.hidden_dropout_prob, mlp_dropout=config.hidden_dropout_prob,
      classifier_dropout=0.0,
      # Unused when every layer is global; ModernBertConfig needs a value.
      local_attention=config.sliding_window or 128,
      layer_types=layer_types,
      rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": config.rope_theta},
                       "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}})


def _unrepresentable(config: model_lib.BertConfig) -> list[str]:
  checks = (
      (config.prenorm, "prenorm must be True"),
      (config.position_embedding_type == "none" and config.rope_theta > 0,
       "positions must be RoPE only (position_embedding_type='none', rope_theta > 0)"),
      (config.ffn_type == "glu", f"ffn_type={config.ffn_type!r} (ModernBERT's MLP is gated: 'glu')"),
      (config.norm_type == "layernorm", f"norm_type={config.norm_type!r} (ModernBERT: LayerNorm)"),
      (config.type_vocab_size == 0, f"type_vocab_size={config.type_vocab_size} (ModernBERT has "
       "no token types: 0)"),
      (not config.next_sentence_head, "next_sentence_head=True (ModernBERT has no pooler/NSP)"),
      (config.sliding_window % 2 == 0, f"sliding_window={config.sliding_window} is odd "
       "(ModernBERT's local_attention is a total window 2 x half)"),
  )
  return [message for ok, message in checks if not ok]


def config_from_hf(hf: Mapping[str, Any], where: str, **overrides) -> model_lib.BertConfig:
  """BertConfig from a ModernBERT config.json; unsupported options are errors naming them."""
  unknown = sorted(set(hf) - _NEUTRAL_KEYS - _HANDLED_KEYS)
  if unknown:
    raise ValueError(f"{where}: ModernBERT option(s) {unknown} are not supported by bert-jax")
  get = lambda key, default=None: hf.get(key, default)  # noqa: E731
  _require_equal(where, hf, ("attention_bias", "mlp_bias", "classifier_bias"), False)
  _require_equal(where, hf, ("hidden_activation", "classifier_activation"), "gelu")
  _require_equal(where, hf, ("embedding_dropout", "mlp_dropout"), 0.0)
  fixed = (("decoder_bias", True), ("tie_word_embeddings", True), ("classifier_pooling", "cls"),
           ("classifier_dropout", 0.0), ("rope_scaling", None))
  for key, value in fixed:
    if get(key, value) != value:
      raise ValueError(f"{where}: {key}={get(key)!r} is not supported (only {value!r})")
  missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                         "num_attention_heads") if k not in hf]
  if missing:
    raise ValueError(f"{where}: missing field(s) {missing}")
  num_layers = int(hf["num_hidden_layers"])
  global_every, window = _layer_pattern(hf, num_layers, where)
  theta, local_theta = _rope_thetas(hf, where)
  fields = dict(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"], num_hidden_layers=num_layers,
      num_attention_heads=hf["num_attention_heads"], hidden_act=get("hidden_activation", "gelu"),
      max_position_embeddings=get("max_position_embeddings", 8192),
      initializer_range=get("initializer_range", 0.02), layer_norm_eps=get("norm_eps", 1e-5),
      norm_bias=bool(get("norm_bias", False)), use_bias=bool(get("attention_bias", False)),
      pad_token_id=get("pad_token_id") or 0,
      attention_probs_dropout_prob=float(get("attention_dropout", 0.0)),
      hidden_dropout_prob=float(get("mlp_dropout", 0.0)),
      sliding_window=window, global_every=global_every, rope_theta=theta,
      local_rope_theta=local_theta if window else 0.0, vocab_multiple=1)
  try:
    return model_lib.modern_config("modernbert-base", **{**fields, **overrides})
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: {e}") from e


def _require_equal(where, hf, keys, default):
  values = {k: hf.get(k, default) for k in keys}
  if len({repr(v) for v in values.values()}) > 1:
    raise ValueError(f"{where}: {values} differ; bert-jax has one setting for all of them")


def _layer_pattern(hf, num_layers: int, where: str) -> tuple[int, int]:
  """(global_every, sliding_window) from layer_types or global_attn_every_n_layers."""
  window = int(hf.get("local_attention", 128))
  types = hf.get("layer_types")
  if types is None:
    every = int(hf.get("global_attn_every_n_layers", 3))
    types = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(num_layers)]
  if len(types) != num_layers or set(types) - {"full_attention", "sliding_attention"}:
    raise ValueError(f"{where}: layer_types {types} is not one of full_attention / "
                     f"sliding_attention per layer for {num_layers} layers")
  if "sliding_attention" not in types:
    return 1, 0
  globals_ = [i for i, t in enumerate(types) if t == "full_attention"]
  every = globals_[1] if len(globals_) > 1 else num_layers
  want = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(num_layers)]
  if types != want:
    raise ValueError(f"{where}: layer_types {types} is not 'global every N-th layer from layer 0', "
                     "the only pattern bert-jax supports")
  if "global_attn_every_n_layers" in hf and int(hf["global_attn_every_n_layers"]) != every and (
      len(globals_) > 1):
    raise ValueError(f"{where}: global_attn_every_n_layers={hf['global_attn_every_n_layers']} "
                     f"contradicts layer_types (global every {every})")
  return every, window


def _rope_thetas(hf, where: str) -> tuple[float, float]:
  params = hf.get("rope_parameters")
  if params is None:  # config.json files written before transformers 5
    return float(hf.get("global_rope_theta", 160_000.0)), float(hf.get("local_rope_theta", 10_000.0))
  thetas = []
  for kind, default in (("full_attention", 160_000.0), ("sliding_attention", 10_000.0)):
    p = dict(params.get(kind) or {})
    if p.get("rope_type", "default") != "default" or set(p) - {"rope_type", "rope_theta"}:
      raise ValueError(f"{where}: rope_parameters[{kind!r}]={p} is not supported (only "
                       "rope_type 'default' with a rope_theta)")
    thetas.append(float(p.get("rope_theta", default)))
  return thetas[0], thetas[1]


# ----------------------------------------------------------------------------- tensors


def _spec(config: model_lib.BertConfig, task_head: str | None = None
          ) -> list[tuple[str, list[tuple[str, ...]], int]]:
  """(HF key, our parameter paths joined along HF's axis 0, n_in) for every tensor.

  The MLM model's by default; with `task_head` (our task head's scope: `classifier`,
  `qa_outputs`) a ModernBertFor<Task>'s: its `head` is our `head` scope and its
  `classifier` our task head.

  n_in: how many leading dims of our kernel are its input (2 for [N, D, H]);
  0 for norms and biases (flattened), `_AS_IS` for the embedding table.
  """
  out = [("model.embeddings.tok_embeddings.weight",
          [("bert", "embeddings", "word_embeddings", "embedding")], _AS_IS)]
  out += _norm("model.embeddings.norm", ("bert", "embeddings", "LayerNorm"), config)
  for i in range(config.num_hidden_layers):
    ours, hf = ("bert", "encoder", f"layer_{i}"), f"model.layers.{i}"
    if i:
      out += _norm(f"{hf}.attn_norm", ours + ("attention_norm",), config)
    out += _norm(f"{hf}.mlp_norm", ours + ("mlp_norm",), config)
    qkv = [ours + ("attention", "self", n) for n in ("query", "key", "value")]
    out += _linear(f"{hf}.attn.Wqkv", qkv, 1, config)
    out += _linear(f"{hf}.attn.Wo", [ours + ("attention", "output", "dense")], 2, config)
    wi = [ours + ("intermediate", n) for n in ("dense", "gate")]
    out += _linear(f"{hf}.mlp.Wi", wi, 1, config)
    out += _linear(f"{hf}.mlp.Wo", [ours + ("output", "dense")], 1, config)
  out += _norm("model.final_norm", ("bert", "encoder", "final_norm"), config)
  transform = ("cls", "predictions", "transform") if task_head is None else ("head",)
  out += _linear("head.dense", [transform + ("dense",)], 1, config)
  out += _norm("head.norm", transform + ("LayerNorm",), config)
  if task_head is None:
    out.append(("decoder.bias", [("cls", "predictions", "bias")], 0))
  else:  # transformers' task classifiers always have a bias
    out += [("classifier.weight", [(task_head, "kernel")], 1),
            ("classifier.bias", [(task_head, "bias")], 0)]
  return out


def parameter_paths(config: model_lib.BertConfig, task_head: str | None = None
                    ) -> set[tuple[str, ...]]:
  """Our parameter paths that a ModernBertForMaskedLM (or task model) checkpoint holds."""
  return {p for _, paths, _ in _spec(config, task_head) for p in paths}


def _norm(hf: str, ours: tuple[str, ...], config) -> list:
  rows = [(f"{hf}.weight", [ours + ("scale",)], 0)]
  if config.norm_bias:
    rows.append((f"{hf}.bias", [ours + ("bias",)], 0))
  return rows


def _linear(hf: str, ours: list[tuple[str, ...]], n_in: int, config) -> list:
  rows = [(f"{hf}.weight", [p + ("kernel",) for p in ours], n_in)]
  if config.use_bias:
    rows.append((f"{hf}.bias", [p + ("bias",) for p in ours], 0))
  return rows


def _to_hf(x: np.ndarray, n_in: int) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if n_in == _AS_IS:
    return x
  if n_in == 0:  # norms and biases ([N, D] ones too) flat
    return x.reshape(-1)
  return x.reshape(int(np.prod(x.shape[:n_in])), -1).T


def _from_hf(w: np.ndarray, n_in: int, shape: tuple[int, ...]) -> np.ndarray:
  if n_in in (0, _AS_IS):
    return w.reshape(shape)
  return np.ascontiguousarray(w.T).reshape(shape)


def to_hf_state_dict(config: model_lib.BertConfig, flat: Mapping[tuple[str, ...], Any],
                     task_head: str | None = None) -> dict[str, np.ndarray]:
  """Our flat (unstacked) params -> ModernBertForMaskedLM's state dict (tied decoder left
  out), or with `task_head` a ModernBertFor<Task>'s."""
  spec = _spec(config, task_head)
  missing = [p for _, paths, _ in spec for p in paths
             if p not in flat and (p[0] != "cls" or task_head is not None)]
  if missing:
    raise ValueError(f"the parameters lack {len(missing)} encoder tensor(s) the config needs, "
                     f"e.g. {'/'.join(missing[0])}")
  return {key: np.ascontiguousarray(np.concatenate([_to_hf(flat[p], n_in) for p in paths], 0))
          for key, paths, n_in in spec if all(p in flat for p in paths)}


def from_hf_state_dict(config: model_lib.BertConfig, tensors: Mapping[str, np.ndarray],
                       expected: Mapping[tuple[str, ...], tuple[int, ...]], where: str
                       ) -> tuple[dict[tuple[str, ...], np.ndarray], list[str], list[str]]:
  """(flat params, absent HF keys, mismatch messages) from a ModernBERT state dict.

  `tensors` keys carry the `model.` prefix (an encoder-only ModernBertModel's keys
  are prefixed by the caller); `expected` are our parameter shapes.
  """
  flat, absent, mismatched = {}, [], []
  for key, paths, n_in in _spec(config):
    if key not in tensors:
      absent.append(key)
      continue
    w = tensors[key]
    want = sum(_hf_rows(expected[p], n_in) for p in paths)
    if w.shape[0] != want:
      mismatched.append(f"{key}: checkpoint shape {tuple(w.shape)}, the config's has {want} rows")
      continue
    offset = 0
    for p in paths:
      rows = _hf_rows(expected[p], n_in)
      try:
        flat[p] = _from_hf(w[offset:offset + rows], n_in, expected[p])
      except ValueError:
        mismatched.append(f"{key}: checkpoint shape {tuple(w.shape)} does not fit {expected[p]}")
      offset += rows
  decoder = tensors.get("decoder.weight")
  embed = tensors.get("model.embeddings.tok_embeddings.weight")
  if decoder is not None and embed is not None and not np.array_equal(decoder, embed):
    raise ValueError(f"{where}: decoder.weight differs from the word embeddings; untied "
                     "MLM decoders are not supported")
  return flat, absent, mismatched


def _hf_rows(shape: tuple[int, ...], n_in: int) -> int:
  if n_in == _AS_IS:
    return shape[0]
  if n_in == 0:
    return int(np.prod(shape))
  return int(np.prod(shape[n_in:]))
