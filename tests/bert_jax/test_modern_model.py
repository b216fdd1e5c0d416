"""The modern-encoder options of BertConfig: each against a hand computation, the banded
local attention against a full attention with the band mask, packing, bad values."""

import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import model as model_lib
from bert_jax import partitioning as P

GOLDEN = pathlib.Path(__file__).parent / "golden" / "modern_tiny_param_axes.json"
TOL = dict(rtol=1e-5, atol=1e-5)


def _tiny(**overrides):
  base = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=2, intermediate_size=48,
              vocab_size=100, max_position_embeddings=64, sliding_window=8, global_every=3,
              pad_token_id=0)
  return model_lib.modern_config("modernbert-tiny", **{**base, **overrides})


def _segments(mask):
  return jnp.ones_like(mask), mask


@pytest.mark.parametrize("length,half", [(19, 4), (16, 4), (7, 8), (30, 3)])
def test_local_attention_equals_full_attention_with_the_band_mask(length, half):
  rng = np.random.default_rng(length)
  q, k, v = (jnp.asarray(rng.normal(size=(2, length, 3, 4)), jnp.float32) for _ in range(3))
  mask = np.ones((2, length), np.int32)
  mask[1, length - 5:] = 0  # padding keys of row 1
  qs, ks = _segments(jnp.asarray(mask))
  local = model_lib.local_attention(q, k, v, qs, ks, half)
  full = model_lib._xla_attention(q, k, v, model_lib.band_mask(qs, ks, half))
  # Queries whose whole window is padding see nothing in either form (their output is
  # never read); every other query must agree.
  seen = np.asarray(model_lib.band_mask(qs, ks, half)).any(-1)[:, 0]
  np.testing.assert_allclose(np.asarray(local)[seen], np.asarray(full)[seen], **TOL)
  assert seen.sum() >= 2 * length - 5


def test_local_attention_keeps_packed_instances_apart():
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 24, 2, 4)), jnp.float32) for _ in range(3))
  ids = jnp.asarray([[1] * 7 + [2] * 10 + [3] * 5 + [0] * 2])
  local = model_lib.local_attention(q, k, v, ids, ids, 4)
  full = model_lib._xla_attention(q, k, v, model_lib.band_mask(ids, ids, 4))
  np.testing.assert_allclose(local, full, **TOL)
  # Instance 2 alone gives the same output as inside the row.
  alone = model_lib.local_attention(q[:, 7:17], k[:, 7:17], v[:, 7:17], ids[:, 7:17],
                                    ids[:, 7:17], 4)
  np.testing.assert_allclose(local[:, 7:17], alone, **TOL)


def test_local_layer_never_builds_a_sequence_by_sequence_array():
  """At 1024 tokens with a window of 64, no value in the local layer's program is
  anywhere near L x L elements (the full attention's score matrix)."""
  config = _tiny(num_hidden_layers=2, global_every=2, sliding_window=64, max_position_embeddings=1024)
  layer = model_lib.BertLayer(config, index=1)
  x = jnp.zeros((1, 1024, 32))
  mask = jnp.ones((1, 1024), jnp.int32)
  ctx = {"mask": model_lib.attention_mask_4d(mask), "q_segment": mask, "k_segment": mask,
         "rope_local": model_lib.rope_tables(jnp.arange(1024)[None], 16, 10_000.0)}
  params = jax.eval_shape(layer.init, jax.random.key(0), x, ctx)
  jaxpr = jax.make_jaxpr(lambda p: layer.apply(p, x, ctx))(params)
  sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars]
  # Scores per head are L x 3c = 1024 x 96; an L x L matrix per head would be 1024 x 1024.
  assert max(sizes) < 1024 * 1024, max(sizes)
  global_layer = model_lib.BertLayer(config, index=0)
  jaxpr = jax.make_jaxpr(lambda p: global_layer.apply(p, x, ctx))(params)
  sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars]
  assert max(sizes) >= 1024 * 1024  # the check above can see one


def test_rope_by_hand():
  d, theta = 4, 100.0
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 1, d)), jnp.float32)
  out = model_lib.apply_rope(x, model_lib.rope_tables(jnp.arange(3)[None], d, theta))
  for pos in range(3):
    want = np.zeros(d)
    for i in range(d // 2):  # dimension i pairs with i + d/2, angle pos * theta^(-2i/d)
      angle = pos * theta ** (-2 * i / d)
      a, b = float(x[0, pos, 0, i]), float(x[0, pos, 0, i + d // 2])
      want[i] = a * np.cos(angle) - b * np.sin(angle)
      want[i + d // 2] = b * np.cos(angle) + a * np.sin(angle)
    np.testing.assert_allclose(out[0, pos, 0], want, **TOL)


def test_glu_and_rmsnorm_and_no_bias_by_hand():
  config = _tiny(hidden_act="silu", norm_type="rmsnorm")
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 32)), jnp.float32)
  ffn = model_lib.BertIntermediate(config)
  params = ffn.init(jax.random.key(0), x)["params"]
  params = nn.unbox(params)
  assert set(params) == {"dense", "gate"} and set(params["dense"]) == {"kernel"}
  want = jax.nn.silu(x @ params["dense"]["kernel"]) * (x @ params["gate"]["kernel"])
  np.testing.assert_allclose(ffn.apply({"params": params}, x), want, **TOL)
  norm = model_lib._layer_norm(config, "n")
  p = nn.unbox(norm.init(jax.random.key(1), x)["params"])
  assert set(p) == {"scale"}
  want = x / np.sqrt(np.mean(np.square(x), -1, keepdims=True) + config.layer_norm_eps)
  np.testing.assert_allclose(norm.apply({"params": p}, x), want, **TOL)


def test_prenorm_layer_by_hand():
  """layer i > 0: x + attn(norm(x)), then x + ffn(norm(x)); layer 0 has no attention norm."""
  config = _tiny()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 32)), jnp.float32)
  mask = jnp.ones((1, 6), jnp.int32)
  ctx = {"mask": model_lib.attention_mask_4d(mask),
         "rope_global": model_lib.rope_tables(jnp.arange(6)[None], 16, config.rope_theta)}
  for index in (0, 3):
    layer = model_lib.BertLayer(config, index=index)
    p = nn.unbox(layer.init(jax.random.key(0), x, ctx)["params"])
    assert ("attention_norm" in p) == (index > 0)
    out, _ = layer.apply({"params": p}, x, ctx)
    norm = lambda y, name: model_lib._layer_norm(config).apply({"params": p[name]}, y)
    h = x if index == 0 else norm(x, "attention_norm")
    attn = model_lib.BertSelfAttention(config).apply({"params": p["attention"]["self"]}, h, ctx,
                                                     deterministic=True)
    x1 = x + jnp.einsum("blnd,ndh->blh", attn, p["attention"]["output"]["dense"]["kernel"])
    g = norm(x1, "mlp_norm")
    ffn = (jax.nn.gelu(g @ p["intermediate"]["dense"]["kernel"], approximate=False)
           * (g @ p["intermediate"]["gate"]["kernel"]))
    np.testing.assert_allclose(out, x1 + ffn @ p["output"]["dense"]["kernel"], **TOL)


def test_layer_kinds_and_padded_vocab():
  config = model_lib.modern_config("modernbert-base")
  kinds = ["local" if config.is_local_layer(i) else "global" for i in range(6)]
  assert kinds == ["global", "local", "local", "global", "local", "local"]
  assert _tiny(vocab_size=100).padded_vocab_size == 128
  assert model_lib.bert_config("tiny").padded_vocab_size == 30522


def _abstract_table(config):
  boxed = jax.eval_shape(lambda: model_lib.BertForPreTraining(config).init(
      jax.random.key(0), **model_lib.dummy_inputs(config)))["params"]
  axes = P.logical_axes(boxed)
  table = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(boxed))[0]:
    names = axes
    for k in path:
      names = names[k.key]
    table[P._path_str(path)] = {"shape": list(leaf.shape), "axes": list(names)}
  return table


def test_golden_param_axes_of_the_modern_tiny_preset():
  """Pins {parameter: shape, logical axes} of modernbert-tiny; UPDATE_GOLDEN=1 rewrites it."""
  table = _abstract_table(model_lib.modern_config("modernbert-tiny"))
  for path, entry in table.items():
    assert len(entry["axes"]) == len(entry["shape"]), path
    assert all(a in P.PARAM_AXES for a in entry["axes"]), path
  if os.environ.get("UPDATE_GOLDEN"):
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}"
                      for k, v in sorted(table.items()))
    GOLDEN.write_text("{\n" + rows + "\n}\n")
  assert table == json.loads(GOLDEN.read_text())


def _packed_and_alone(config):
  model = model_lib.BertModel(config, add_pooling_layer=False)
  rng = np.random.default_rng(0)
  lengths = (11, 14, 5)
  ids = np.zeros((1, 32), np.int32)
  inst = np.zeros((1, 32), np.int32)
  pos = np.zeros((1, 32), np.int32)
  offset = 0
  for i, n in enumerate(lengths):
    ids[0, offset:offset + n] = rng.integers(1, 100, n)
    inst[0, offset:offset + n] = i + 1
    pos[0, offset:offset + n] = np.arange(n)
    offset += n
  params = model.init(jax.random.key(0), jnp.asarray(ids))["params"]
  packed, _ = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(inst > 0),
                          position_ids=jnp.asarray(pos), instance_ids=jnp.asarray(inst))
  offset, pairs = 0, []
  for n in lengths:
    row = np.zeros((1, 20), np.int32)
    row[0, :n] = ids[0, offset:offset + n]
    mask = (np.arange(20) < n).astype(np.int32)[None]
    alone, _ = model.apply({"params": params}, jnp.asarray(row), attention_mask=jnp.asarray(mask))
    pairs.append((packed[0, offset:offset + n], alone[0, :n]))
    offset += n
  return pairs


def test_packing_keeps_instances_apart_in_local_and_global_layers():
  for a, b in _packed_and_alone(_tiny(sliding_window=6)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides,field", [
    (dict(position_embedding_type="absolute"), "rope_theta"),
    (dict(sliding_window=128), "sliding_window"),
    (dict(global_every=0), "global_every"),
    (dict(global_every=4), "global_every"),
    (dict(sliding_window=0, global_every=3), "global_every"),
    (dict(scan_layers=True), "scan_layers"),
    (dict(ffn_type="moe"), "ffn_type"),
    (dict(norm_type="batchnorm"), "norm_type"),
    (dict(rope_theta=0.0, local_rope_theta=0.0), "position_embedding_type"),
    (dict(vocab_multiple=0), "vocab_multiple"),
])
def test_bad_modern_values_name_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    _tiny(**overrides)


def test_bert_defaults_build_no_modern_parameter():
  table = _abstract_table(model_lib.bert_config("tiny"))
  assert not any(("norm" in k and "LayerNorm" not in k) or "gate" in k for k in table)


def test_flops_count_the_gated_ffn_the_window_and_no_nsp_head():
  from bert_jax import flops
  c = model_lib.modern_config("modernbert-base")
  h, i, s, p = 768, 1152, 1024, 300
  encoder = 6 * 22 * (4 * h * h + 3 * h * i) * s
  # 8 global layers (0, 3, ..., 21) see 1024 keys; 14 local ones 129 (64 each side + self).
  attention = 12 * 12 * 64 * s * (8 * 1024 + 14 * 129)
  mlm = 6 * (h * h + h * c.vocab_size) * p
  assert flops.train_flops_per_sequence(c, s, p) == float(encoder + attention + mlm)


def test_2x2x2_mesh_runs_the_modern_encoder_as_one_device():
  """Local blocks, RoPE and the gated FFN under data, fsdp and tensor (heads, mlp) sharding."""
  config = _tiny(num_attention_heads=4, vocab_size=96)
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 96, (8, 24)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[::2, 17:] = 0
  batch = dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=mask,
               masked_lm_positions=rng.integers(0, 17, (8, 3)).astype(np.int32))
  m = model_lib.BertForPreTraining(config)
  init = lambda key: m.init(key, **model_lib.dummy_inputs(config))["params"]  # noqa: E731
  ref = m.apply({"params": nn.unbox(init(jax.random.key(0)))}, **batch)[0]
  mesh = P.make_mesh((2, 2, 2))
  params, _ = P.create_sharded(init, mesh, P.DEFAULT_RULES, jax.random.key(0))
  gate = params["bert"]["encoder"]["layer_1"]["intermediate"]["gate"]["kernel"]
  assert gate.addressable_shards[0].data.shape == (16, 24)  # [32, 48] over fsdp=2, tensor=2
  with P.axis_rules(mesh):
    out = jax.jit(m.apply)({"params": params}, **P.host_to_device(batch, mesh))[0]
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=1e-5)
