"""Schedule, weight-decay mask, optimizer and gradient accumulation."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import synthetic
from bert_jax import train
from tests.helpers import pretrain as pretrain_testlib


def test_linear_schedule_warms_up_then_decays_to_zero():
  s = optim.make_schedule(learning_rate=1e-3, warmup_steps=10, total_steps=110)
  np.testing.assert_allclose([float(s(i)) for i in (0, 5, 10, 60, 110)],
                             [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9)
  assert float(s(200)) == 0.0


def test_cosine_schedule_halfway_and_end():
  s = optim.make_schedule(learning_rate=2e-3, warmup_steps=10, total_steps=110, kind="cosine")
  np.testing.assert_allclose([float(s(10)), float(s(60)), float(s(110))], [2e-3, 1e-3, 0.0],
                             atol=1e-9)


def test_schedule_rejects_bad_fields():
  with pytest.raises(ValueError, match="config.schedule"):
    optim.make_schedule(learning_rate=1.0, warmup_steps=1, total_steps=10, kind="step")
  with pytest.raises(ValueError, match="config.warmup_steps"):
    optim.make_schedule(learning_rate=1.0, warmup_steps=11, total_steps=10)
  with pytest.raises(ValueError, match="config.optimizer"):
    optim.make_optimizer(lambda _: 1.0, kind="sgd")


@functools.lru_cache(maxsize=None)
def _boxed_params(**overrides):
  config = model_lib.bert_config("tiny", vocab_size=64, **overrides)
  inputs = model_lib.dummy_inputs(config, seq_len=8)
  init = jax.jit(lambda rng: model_lib.BertForPreTraining(config).init(rng, **inputs))
  return init(jax.random.key(0))["params"]


@pytest.mark.parametrize("scan_layers", [False, True])
def test_decay_mask_excludes_layernorm_and_biases_only(scan_layers):
  boxed = _boxed_params(scan_layers=scan_layers)
  mask = nn.unbox(optim.decay_mask(boxed))
  flat = {"/".join(str(k.key) for k in path): v
          for path, v in jax.tree_util.tree_leaves_with_path(mask)}
  decayed = {p for p, v in flat.items() if v}
  kept = {p for p, v in flat.items() if not v}
  assert "bert/embeddings/word_embeddings/embedding" in decayed
  assert any(p.endswith("attention/self/query/kernel") for p in decayed)
  assert all(p.endswith(("kernel", "embedding")) for p in decayed), decayed
  assert all(p.endswith(("bias", "scale")) for p in kept), kept
  assert any("LayerNorm/scale" in p for p in kept)
  assert "cls/predictions/bias" in kept
  # With a scan over layers, LayerNorm scales are rank 2 yet still excluded.
  if scan_layers:
    shapes = {"/".join(str(k.key) for k in path): v.shape
              for path, v in jax.tree_util.tree_leaves_with_path(nn.unbox(boxed))}
    assert any(len(shapes[p]) == 2 for p in kept if "LayerNorm" in p)


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_weight_decay_moves_only_decayed_parameters(kind):
  params = nn.unbox(_boxed_params(scan_layers=False))
  tx = optim.make_optimizer(lambda _: 0.1, kind=kind, weight_decay=0.5)
  state = tx.init(params)
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zero_grads, state, params)
  mask = optim.decay_mask(params)
  for up, m, p in zip(jax.tree.leaves(updates), jax.tree.leaves(mask), jax.tree.leaves(params)):
    if m and np.any(np.asarray(p) != 0):
      assert np.any(np.asarray(up) != 0)
    if not m:
      assert not np.any(np.asarray(up))


def test_gradient_accumulation_equals_one_large_batch():
  config = pretrain_testlib.small_config(**{"model.hidden_dropout_prob": 0.0,
                                            "model.attention_probs_dropout_prob": 0.0})
  model = model_lib.BertForPreTraining(train.model_config_from(config))
  tx, schedule = optim.optimizer_from_config(config)
  state, _ = train.create_train_state(config, model, tx, pretrain_testlib.one_device_mesh())
  batch = synthetic.synthetic_batch(np.random.default_rng(0), 16, config.max_seq_length,
                                    config.max_predictions_per_seq, config.model.vocab_size)
  # Make the per-micro-batch prediction counts unequal, so averaging per micro-batch
  # (instead of over the global batch) would give a different answer.
  batch["masked_lm_weights"][:4, 1:] = 0.0
  batch = jax.tree.map(jnp.asarray, batch)
  results = {}
  for m in (1, 4):
    step = jax.jit(lambda s, b, m=m: train.train_step(s, b, model=model, tx=tx, schedule=schedule,
                                                      num_micro_batches=m))
    results[m] = step(state, batch)
  (s1, m1), (s4, m4) = results[1], results[4]
  for k in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "grad_norm"):
    np.testing.assert_allclose(m4[k], m1[k], rtol=1e-5, err_msg=k)
  for a, b in zip(jax.tree.leaves(s4.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_split_micro_batches_is_strided():
  batch = {"x": jnp.arange(8)}
  out = optim.split_micro_batches(batch, 2)
  np.testing.assert_array_equal(out["x"], [[0, 2, 4, 6], [1, 3, 5, 7]])
  with pytest.raises(ValueError, match="num_micro_batches"):
    optim.split_micro_batches(batch, 3)
