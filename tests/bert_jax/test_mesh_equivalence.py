"""The same 5 training steps give the same losses on one device and on 8 simulated
devices laid out as data, fsdp or tensor parallel (float32, relative 1e-5).

Dropout stays on: jax's partitionable threefry draws the same bits whatever the
sharding, so the runs must agree exactly up to float reassociation.
"""

import jax
import numpy as np
import pytest

from tests.helpers import pretrain as pretrain_testlib
from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import partitioning
from bert_jax import synthetic
from bert_jax import train

STEPS = 5


# 8 heads, so that a tensor-parallel axis of 8 divides them.
CONFIG = pretrain_testlib.small_config(**{"data.synthetic": True, "model.num_attention_heads": 8})


def _losses(mesh, initial_state):
  """Per-step metrics of STEPS steps on `mesh` from `initial_state` (host arrays)
  placed into the shardings the mesh's rules give it. One init shared by every
  mesh: the same starting point, and one compile per mesh saved."""
  config = CONFIG
  model = model_lib.BertForPreTraining(train.model_config_from(config))
  tx, schedule = optim.optimizer_from_config(config)
  _, shardings = train.abstract_train_state(config, model, tx, mesh)
  state = jax.device_put(initial_state, shardings)
  steps = train.compile_steps(config, model, tx, schedule, mesh, shardings)
  it = synthetic.SyntheticSource.from_config(config).train_batches()
  out = []
  for _ in range(STEPS):
    state, m = steps.train(state, partitioning.host_to_device(next(it), mesh))
    out.append({k: float(v) for k, v in m.items()})
  return out


@pytest.fixture(scope="module")
def reference():
  assert jax.config.jax_threefry_partitionable
  mesh = pretrain_testlib.one_device_mesh()
  model = model_lib.BertForPreTraining(train.model_config_from(CONFIG))
  tx, _ = optim.optimizer_from_config(CONFIG)
  initial = jax.device_get(train.create_train_state(CONFIG, model, tx, mesh)[0])
  return initial, _losses(mesh, initial)


@pytest.mark.parametrize("shape", [(2, 2, 2), (8, 1, 1), (1, 8, 1), (1, 1, 8)])
def test_mesh_gives_the_one_device_losses(reference, shape):
  mesh = partitioning.make_mesh(shape)
  assert mesh.devices.size == 8
  initial, expected = reference
  got = _losses(mesh, initial)
  for step, (g, r) in enumerate(zip(got, expected), start=1):
    for k in ("loss", "mlm_loss", "nsp_loss", "grad_norm"):
      np.testing.assert_allclose(g[k], r[k], rtol=1e-5, err_msg=f"{k} at step {step}, mesh {shape}")
  # The run actually trained: the loss moved.
  assert got[-1]["loss"] != got[0]["loss"]
