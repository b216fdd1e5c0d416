"""ModernBERT's recipe: the warmup-stable-decay schedule and StableAdamW by hand, MLM-only
pretraining steps, and context extension (longer rows, another RoPE theta) by init_from."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import pretrain as pretrain_testlib
from bert_jax.checkpointing import layout
from bert_jax.checkpointing import manager as ckpt
from bert_jax.checkpointing import init_from as init_from_lib
from bert_jax import optim
from bert_jax import partitioning
from bert_jax import synthetic
from bert_jax import train
from bert_jax import tree as tree_lib
from bert_jax.configs import modernbert_tiny


def test_wsd_schedule_by_hand():
  s = optim.make_schedule(learning_rate=1.0, warmup_steps=10, total_steps=100, kind="wsd",
                          decay_fraction=0.2)
  # Warmup 0 -> 1 over 10 steps, flat to step 80, then 1 - sqrt((t - 80) / 20) down to 0.
  for step, want in ((0, 0.0), (5, 0.5), (10, 1.0), (50, 1.0), (80, 1.0),
                     (85, 1 - math.sqrt(0.25)), (95, 1 - math.sqrt(0.75)), (100, 0.0)):
    assert float(s(step)) == pytest.approx(want, abs=1e-6), step
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.make_schedule(learning_rate=1.0, warmup_steps=90, total_steps=100, kind="wsd",
                        decay_fraction=0.2)
  with pytest.raises(ValueError, match="decay_fraction"):
    optim.make_schedule(learning_rate=1.0, warmup_steps=0, total_steps=100, kind="wsd",
                        decay_fraction=0.0)


def _stable_adamw_by_hand(params, grads_seq, lr, b1, b2, eps, wd, decays, clip=True):
  """optimi's StableAdamW written out per tensor, in NumPy."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, grads in enumerate(grads_seq, start=1):
    for k in p:
      g = grads[k].astype(np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      m_hat, v_hat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
      rms = math.sqrt(np.mean(g * g / np.maximum(v_hat, eps * eps)))
      step_lr = lr / max(1.0, rms) if clip else lr
      p[k] = p[k] - step_lr * (m_hat / (np.sqrt(v_hat) + eps) + (wd * p[k] if decays[k] else 0))
  return p


def test_stable_adamw_by_hand():
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(size=(3, 4)).astype(np.float32),
            "bias": rng.normal(size=(4,)).astype(np.float32)}
  # Step 3's gradient jumps 50x past the running second moment: the update is clipped.
  grads_seq = [{k: (rng.normal(size=v.shape) * scale).astype(np.float32) for k, v in params.items()}
               for scale in (1.0, 1.0, 50.0, 1.0)]
  decays = {"kernel": True, "bias": False}
  tx = optim.stable_adamw(0.1, b1=0.9, b2=0.99, eps=1e-6, weight_decay=0.5,
                          mask=lambda p: {k: decays[k] for k in p})
  state = tx.init(params)
  p = {k: jnp.asarray(v) for k, v in params.items()}
  for grads in grads_seq:
    updates, state = tx.update({k: jnp.asarray(g) for k, g in grads.items()}, state, p)
    p = {k: p[k] + updates[k] for k in p}
  want = _stable_adamw_by_hand(params, grads_seq, 0.1, 0.9, 0.99, 1e-6, 0.5, decays)
  for k in p:
    np.testing.assert_allclose(p[k], want[k], rtol=1e-5, atol=1e-6)
  # The clip bit: plain AdamW maths (no clip) ends elsewhere.
  unclipped = _stable_adamw_by_hand(params, grads_seq, 0.1, 0.9, 0.99, 1e-6, 0.5, decays,
                                    clip=False)
  assert np.max(np.abs(unclipped["kernel"] - np.asarray(p["kernel"]))) > 1e-2


def _modern_tiny_config(**fields):
  c = modernbert_tiny.get_config("tiny")
  c.model.num_hidden_layers = 2
  for key, value in fields.items():
    *parents, leaf = key.split(".")
    node = c
    for name in parents:
      node = node[name]
    node[leaf] = value
  c.lock()
  return c


def test_mlm_only_training_steps_learn_without_an_nsp_head():
  config = _modern_tiny_config()
  mesh = pretrain_testlib.one_device_mesh()
  state, steps = pretrain_testlib.build(config, mesh)
  names = set(tree_lib.flatten_with_names(state.params))
  assert not any("pooler" in n or "seq_relationship" in n for n in names)
  batch = partitioning.host_to_device(
      next(synthetic.SyntheticSource.from_config(config).train_batches()), mesh)
  losses = []
  for _ in range(6):
    state, metrics = steps.train(state, batch)
    losses.append(float(metrics["loss"]))
  assert float(metrics["nsp_loss"]) == 0.0
  assert float(metrics["loss"]) == pytest.approx(float(metrics["mlm_loss"]))
  assert losses[-1] < losses[0]


def _save_state(config, directory):
  mesh = pretrain_testlib.one_device_mesh()
  state, _ = pretrain_testlib.build(config, mesh)
  checkpointer = ckpt.Checkpointer(os.path.join(directory, layout.CHECKPOINTS_SUBDIR))
  checkpointer.save(3, state, meta={"config": {}}, data_state={})
  checkpointer.close()
  return state


def test_context_extension_carries_rope_parameters_to_longer_rows(tmp_path):
  short = _modern_tiny_config()
  state = _save_state(short, str(tmp_path))
  long = _modern_tiny_config(**{"max_seq_length": 128, "model.max_position_embeddings": 256,
                                "model.rope_theta": 160_000.0})
  mesh = pretrain_testlib.one_device_mesh()
  job = train.build(long, mesh)
  params, _ = init_from_lib.load_params(str(tmp_path), job.abstract_state.params)
  for name, leaf in tree_lib.flatten_with_names(jax.device_get(params)).items():
    np.testing.assert_array_equal(leaf, tree_lib.flatten_with_names(
        jax.device_get(state.params))[name])
  ids = jnp.asarray(np.random.default_rng(0).integers(5, 500, (2, 128)), jnp.int32)
  logits, _ = job.model.apply({"params": params}, ids, None, jnp.ones_like(ids))
  assert logits.shape == (2, 128, 512) and bool(jnp.all(jnp.isfinite(logits)))


def test_context_extension_over_learned_positions_is_refused_clearly(tmp_path):
  short = pretrain_testlib.small_config()
  _save_state(short, str(tmp_path))
  long = pretrain_testlib.small_config(**{"max_seq_length": 64,
                                          "model.max_position_embeddings": 128})
  job = train.build(long, pretrain_testlib.one_device_mesh())
  with pytest.raises(layout.IncompatibleCheckpointError,
                     match="(?s)position_embeddings.*cannot carry over.*rotary"):
    init_from_lib.load_params(str(tmp_path), job.abstract_state.params)


def test_bad_recipe_values_name_the_field():
  with pytest.raises(ValueError, match="sliding_window"):
    train.validate_config(_modern_tiny_config(**{"max_seq_length": 8,
                                                 "max_predictions_per_seq": 4}))
  with pytest.raises(ValueError, match="optimizer"):
    optim.make_optimizer(lambda _: 1.0, kind="stable_adam")
