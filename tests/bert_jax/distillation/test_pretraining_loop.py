"""General distillation through the pretraining loop: the step, the teacher's isolation,
layer initialisation, exact resume, bad input and the student's export.

Tiny models (H64, vocab 512, seq 32) on synthetic batches; teachers are Hugging Face
directories written by `interop.save_hf` from random inits (2 layers; a student of 1).
"""
import glob
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import partitioning
from bert_jax import synthetic
from bert_jax import train
from bert_jax.checkpointing import layout
from bert_jax.distillation import internals
from bert_jax.distillation import loop as distill_lib
from bert_jax.distillation import losses
from bert_jax.multihost import job_failure
from tests.helpers import pretrain as pretrain_testlib


def _config(**fields):
  return pretrain_testlib.small_config(**{"data.synthetic": True, "write_tensorboard": False,
                                          **fields})


def _teacher_dir(root, seed=0, layers=2, **overrides):
  """A random BertForPreTraining of the tiny preset's shape saved as a HF directory."""
  c = _config()
  fields = {**c.model.to_dict(), "num_hidden_layers": layers, **overrides}
  config = model_lib.BertConfig(**fields)
  params = nn.unbox(model_lib.BertForPreTraining(config).init(
      jax.random.PRNGKey(seed), **model_lib.dummy_inputs(config))["params"])
  rng = np.random.default_rng(seed)  # not a fresh init: unit LayerNorms would hide mix-ups
  params = jax.tree.map(lambda x: np.asarray(x + 0.02 * rng.standard_normal(x.shape), x.dtype),
                        jax.device_get(params))
  path = os.path.join(str(root), f"teacher{seed}_{layers}")
  interop.save_hf(config, params, path)
  return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  return _teacher_dir(tmp_path_factory.mktemp("teachers"))


def _batch(config, seed=1):
  return synthetic.synthetic_batch(np.random.default_rng(seed), config.global_batch_size,
                                   config.max_seq_length, config.max_predictions_per_seq,
                                   config.model.vocab_size)


def _step(setup, batch):
  state = setup.init_state()
  return setup.steps.train(state, partitioning.host_to_device(batch, setup.mesh))


def test_hard_terms_alone_are_the_plain_step(teacher):
  mesh = pretrain_testlib.one_device_mesh()
  plain = train.build(_config(), mesh)
  distill = train.build(_config(**{"distill.teacher": teacher, "distill.mlm_soft": 0.0}), mesh)
  batch = _batch(plain.config)
  state_p, metrics_p = _step(plain, batch)
  state_d, metrics_d = _step(distill, batch)
  assert float(metrics_d["loss"]) == float(metrics_p["loss"])
  assert float(metrics_d["distill_mlm_hard"]) == float(metrics_p["mlm_loss"])
  for a, b in zip(jax.tree.leaves(state_p.params), jax.tree.leaves(state_d.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_soft_terms_are_the_losses_of_the_same_forward(teacher):
  mesh = pretrain_testlib.one_device_mesh()
  weights = {"distill.mlm_soft": 1.0, "distill.nsp_soft": 0.5, "distill.hidden_cosine": 2.0,
             "distill.minilm": 0.25, "distill.temperature": 3.0}
  # No dropout, so the step's forward is the deterministic one computed here; two
  # micro-batches, so the global normalisation of the accumulation is checked too.
  config = _config(**{"distill.teacher": teacher, **weights, "num_micro_batches": 2,
                      "model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0})
  setup = train.build(config, mesh)
  batch = _batch(config)
  params = jax.device_get(setup.init_state().params)
  _, metrics = _step(setup, batch)
  run = setup.distill
  args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
          batch["masked_lm_positions"])
  (s_mlm, s_nsp), s_int = internals.apply_with_internals(
      setup.model, params, *args, config=setup.model.config, want_qkv=True, deterministic=True)
  (t_mlm, t_nsp), t_int = internals.apply_with_internals(
      run.model, jax.device_get(run.params), *args, config=run.model.config, want_qkv=True,
      deterministic=True)
  tokens = batch["attention_mask"]
  want = {
      "mlm_soft": losses.soft_cross_entropy(s_mlm, t_mlm, 3.0, batch["masked_lm_weights"]),
      "nsp_soft": losses.soft_cross_entropy(s_nsp, t_nsp, 3.0),
      "hidden_cosine": losses.hidden_cosine(s_int["hidden"], t_int["hidden"], tokens),
      "minilm": losses.attention_relation_kl(s_int, t_int, tokens, 2, ("qq", "kk", "vv")),
  }
  for name, value in want.items():
    np.testing.assert_allclose(float(metrics[f"distill_{name}"]), float(value), rtol=2e-5,
                               err_msg=name)
    assert float(value) > 1e-4, name  # the comparison is not of zeros
  total = (metrics["distill_mlm_hard"] + metrics["distill_nsp_hard"]
           + sum(float(weights[f"distill.{k}"]) * want[k] for k in want))
  np.testing.assert_allclose(float(metrics["loss"]), float(total), rtol=2e-5)


def test_the_teacher_gets_no_gradient():
  pass
