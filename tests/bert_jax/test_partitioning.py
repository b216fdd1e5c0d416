"""Logical axes: the golden table of the tiny preset, placement on a 2x2x2 mesh, the batch door."""

import json
import os
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from bert_jax import model as model_lib
from bert_jax import partitioning

GOLDEN = pathlib.Path(__file__).parent / "golden" / "tiny_param_axes.json"


def _abstract_params(config):
  return jax.eval_shape(lambda: model_lib.BertForPreTraining(config).init(
      jax.random.key(0), **model_lib.dummy_inputs(config)))["params"]


def _table(config):
  boxed = _abstract_params(config)
  axes = partitioning.logical_axes(boxed)
  table = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(boxed))[0]:
    names = axes
    for k in path:
      names = names[k.key]
    table[partitioning._path_str(path)] = {"shape": list(leaf.shape), "axes": list(names)}
  return table


def test_golden_param_axes_of_tiny_preset():
  """Pins {parameter: shape, logical axes}; regenerate with UPDATE_GOLDEN=1 after a deliberate change."""
  table = _table(model_lib.bert_config("tiny"))
  if os.environ.get("UPDATE_GOLDEN"):
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(table.items()))
    GOLDEN.write_text("{\n" + rows + "\n}\n")
  golden = json.loads(GOLDEN.read_text())
  assert table == golden


def test_every_dimension_has_exactly_one_known_name():
  for config in (model_lib.bert_config("tiny"), model_lib.bert_config("tiny", scan_layers=True)):
    for path, entry in _table(config).items():
      assert len(entry["axes"]) == len(entry["shape"]), path
      assert all(a in partitioning.PARAM_AXES for a in entry["axes"]), path


def test_2x2x2_mesh_places_params_by_the_rules_and_matches_one_device():
  config = model_lib.bert_config("tiny", vocab_size=96)
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 96, (8, 16)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[::2, 12:] = 0
  batch = dict(input_ids=ids, token_type_ids=(np.arange(16) >= 8).astype(np.int32)[None].repeat(8, 0),
               attention_mask=mask, masked_lm_positions=rng.integers(0, 12, (8, 3)).astype(np.int32))
  m = model_lib.BertForPreTraining(config)
  init = lambda key: m.init(key, **model_lib.dummy_inputs(config))["params"]
  ref_params = nn.unbox(init(jax.random.key(0)))
  ref = m.apply({"params": ref_params}, **batch)

  mesh = partitioning.make_mesh((2, 2, 2))
  params, shardings = partitioning.create_sharded(init, mesh, partitioning.DEFAULT_RULES,
                                                  jax.random.key(0))
  rules = dict(partitioning.DEFAULT_RULES)
  axes = partitioning.logical_axes(_abstract_params(config))
  flat_axes = {partitioning._path_str(p): a for p, a in jax.tree_util.tree_flatten_with_path(
      axes, is_leaf=lambda x: isinstance(x, tuple))[0]}
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = flat_axes[partitioning._path_str(path)]
    expected = PartitionSpec(*[rules[n] for n in names])
    assert x.sharding.spec == expected, (partitioning._path_str(path), x.sharding.spec, expected)
    assert len(x.sharding.device_set) == 8
  kernel = params["bert"]["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
  assert kernel.addressable_shards[0].data.shape == (64, 256)   # [128, 512] over fsdp=2, tensor=2
  # The same random stream: equal up to rounding (the tests compile with LLVM's optimisations
  # off, where the sharded and the one-device programs may round the truncated normal's
  # last bit differently; see tests/helpers/__init__.py).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0),
               jax.tree.map(np.asarray, params), ref_params)

  device_batch = partitioning.host_to_device(batch, mesh)
  assert device_batch["input_ids"].sharding.spec == PartitionSpec(("data", "fsdp"))
  with partitioning.axis_rules(mesh):
    out = jax.jit(m.apply)({"params": params}, **device_batch)
  for a, b in zip(out, ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_mesh_shapes():
  assert partitioning.resolve_mesh_shape((1, -1, 1), 8) == (1, 8, 1)
  assert partitioning.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  assert dict(partitioning.make_mesh((2, 4, 1)).shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  assert dict(partitioning.make_mesh((1, 1, 1), jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1, "tensor": 1}
  with pytest.raises(ValueError, match=r"needs 16 devices, but 8 are available"):
    partitioning.make_mesh((2, 4, 2))
  with pytest.raises(ValueError, match="do not divide"):
    partitioning.make_mesh((3, -1, 1))
  with pytest.raises(ValueError, match="at most one entry may be -1"):
    partitioning.make_mesh((-1, -1, 1))


def test_rules_are_checked():
  with pytest.raises(ValueError, match="unknown logical axis 'embedding'"):
    partitioning.validate_rules([("embedding", "fsdp")])
  with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
    partitioning.validate_rules([("embed", "model")])


def test_indivisible_parameter_names_the_parameter():
  config = model_lib.bert_config("tiny", vocab_size=99)   # 99 rows cannot split over tensor=2
  mesh = partitioning.make_mesh((2, 2, 2))
  with pytest.raises(ValueError, match=r"word_embeddings/embedding: dimension of size 99"):
    partitioning.shardings_for(_abstract_params(config), mesh)


def test_batch_that_does_not_divide_is_refused():
  mesh = partitioning.make_mesh((2, 2, 2))
  with pytest.raises(ValueError, match=r"batch field 'input_ids': 6 local rows do not divide"):
    partitioning.host_to_device({"input_ids": np.zeros((6, 4), np.int32)}, mesh)
