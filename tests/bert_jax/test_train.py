"""The train step, the loop and its outputs, and bad-input errors."""

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import pretrain as pretrain_testlib
from bert_jax import batch as batch_lib
from bert_jax import metrics as metrics_lib
from bert_jax import partitioning
from bert_jax import synthetic
from bert_jax import train
from data_pipeline import pretraining_source

TRAIN_KEYS = {"step", "loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy",
              "grad_norm", "learning_rate", "seq_per_sec", "tokens_per_sec"}
EVAL_KEYS = {"step", "eval_mlm_loss", "eval_mlm_accuracy", "eval_nsp_loss", "eval_nsp_accuracy",
             "eval_perplexity"}


@pytest.fixture(scope="module")
def setup():
  """One compile shared by the loop tests: synthetic data, all 8 devices (fsdp)."""
  config = pretrain_testlib.small_config(**{"data.synthetic": True}, num_train_steps=12, learning_rate=3e-3,
                                         log_every_steps=4, eval_every_steps=8)
  setup = train.build(config)
  return config, setup.mesh, setup.init_state(), setup


# The train step donates its input state: each test gets its own buffers. One jitted
# copy of the whole tree, rather than a compile per leaf shape.
_copy = jax.jit(lambda state: jax.tree.map(jnp.copy, state))


def _run_loop(setup, workdir, train_iter, state=None):
  config, _, state0, built = setup
  return train.train_loop(
      built, str(workdir), state=_copy(state0) if state is None else state,
      host=train.HostState(train_iter),
      make_eval_iter=synthetic.SyntheticSource.from_config(config).eval_batches)


def test_loss_falls_on_a_repeated_batch(setup, tmp_path):
  config = setup[0]
  batch = next(synthetic.SyntheticSource.from_config(config).train_batches())
  _run_loop(setup, tmp_path, itertools.repeat(batch))
  records = [r for r in metrics_lib.read_metrics(str(tmp_path)) if "loss" in r]
  assert [r["step"] for r in records] == [4, 8, 12]
  assert records[-1]["loss"] < records[0]["loss"] - 0.5, records
  assert records[-1]["mlm_accuracy"] > records[0]["mlm_accuracy"] + 0.2


def test_non_finite_loss_stops_the_run_naming_the_step(setup, tmp_path):
  config, mesh, state0, _ = setup
  state = _copy(state0)
  # A NaN parameter makes the very first loss NaN.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * jnp.nan if "word_embeddings" in jax.tree_util.keystr(p) else x,
      state.params)
  state = state.replace(params=params)
  with pytest.raises(train.NonFiniteLossError, match="at step 1"):
    _run_loop(setup, tmp_path, synthetic.SyntheticSource.from_config(config).train_batches(), state=state)


def test_train_step_is_deterministic_given_step_and_differs_across_steps(setup):
  config, mesh, state0, built = setup
  steps = built.steps
  batch = partitioning.host_to_device(next(synthetic.SyntheticSource.from_config(config).train_batches()), mesh)
  _, m_a = steps.train(_copy(state0), batch)
  _, m_b = steps.train(_copy(state0), batch)
  _, m_c = steps.train(_copy(state0).replace(step=jnp.asarray(5, jnp.int32)), batch)
  assert float(m_a["loss"]) == float(m_b["loss"])
  # Same parameters, another step: another dropout key, another loss.
  assert float(m_a["loss"]) != float(m_c["loss"])


def test_train_and_evaluate_writes_metrics_events_and_curves(tmp_path):
  # Two micro-batches of 8 over data x fsdp = 4 devices: accumulation on a mesh.
  config = pretrain_testlib.small_config(**{"data.synthetic": True}, num_train_steps=6,
                                         log_every_steps=2, eval_every_steps=4,
                                         checkpoint_every_steps=0, mesh_shape=(2, 2, 2),
                                         num_micro_batches=2)
  summary = pretrain_testlib.run_pretraining(config, str(tmp_path), all_devices=True)
  records = metrics_lib.read_metrics(str(tmp_path))
  train_records = [r for r in records if "loss" in r]
  eval_records = [r for r in records if "eval_mlm_loss" in r]
  assert [r["step"] for r in train_records] == [2, 4, 6]
  assert all(TRAIN_KEYS <= set(r) for r in train_records)
  assert [r["step"] for r in eval_records] == [4, 6]
  assert all(EVAL_KEYS <= set(r) for r in eval_records)
  assert EVAL_KEYS - {"step"} <= set(summary)
  assert eval_records[-1]["eval_mlm_loss"] == summary["eval_mlm_loss"]
  np.testing.assert_allclose(summary["eval_perplexity"], np.exp(summary["eval_mlm_loss"]),
                             rtol=1e-12)
  # The schedule as logged (means over each window of 2 steps): warmup from 0 to 1e-3
  # over 2 steps, then linear decay to 0 at step 6. Step s uses the rate of s - 1.
  lrs = [r["learning_rate"] for r in train_records]
  np.testing.assert_allclose(lrs, [(0 + 5e-4) / 2, (1e-3 + 7.5e-4) / 2, (5e-4 + 2.5e-4) / 2],
                             rtol=1e-6)
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
  with open(tmp_path / "curves.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(tmp_path / "summary.json") as f:
    assert json.load(f) == summary


# -- bad input: clear messages before anything compiles ----------------------


def test_batch_not_divisible_by_data_parallel_devices(tmp_path):
  config = pretrain_testlib.small_config(**{"data.synthetic": True}, global_batch_size=12,
                                         eval_batch_size=16)
  with pytest.raises(ValueError, match=r"global_batch_size=12.*8 data-parallel devices"):
    pretrain_testlib.run_pretraining(config, str(tmp_path), all_devices=True)


def test_micro_batches_must_divide_over_devices(tmp_path):
  config = pretrain_testlib.small_config(**{"data.synthetic": True}, num_micro_batches=4)
  with pytest.raises(ValueError, match=r"micro-batches of 4 sequences"):
    pretrain_testlib.run_pretraining(config, str(tmp_path), all_devices=True)


def test_mesh_not_matching_device_count(tmp_path):
  config = pretrain_testlib.small_config(**{"data.synthetic": True}, mesh_shape=(3, 1, 1))
  with pytest.raises(ValueError, match=r"mesh_shape \(3, 1, 1\).*8 are available"):
    pretrain_testlib.run_pretraining(config, str(tmp_path), all_devices=True)


def test_missing_data_dir(tmp_path):
  config = pretrain_testlib.small_config(**{"data.data_dir": str(tmp_path / "nope")})
  with pytest.raises(FileNotFoundError, match="config.data.data_dir"):
    pretrain_testlib.run_pretraining(config, str(tmp_path), all_devices=True)


def test_data_vocabulary_larger_than_the_model(tmp_path, monkeypatch):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  monkeypatch.setattr(pretraining_source, "read_manifest", lambda d: {"vocab_size": 8192})
  config = pretrain_testlib.small_config(**{"data.data_dir": str(data_dir)})
  with pytest.raises(ValueError, match=r"vocabulary of 8192 ids.*config.model.vocab_size=512"):
    pretrain_testlib.run_pretraining(config, str(tmp_path), all_devices=True)


def test_synthetic_batches_honour_the_contract():
  b = synthetic.synthetic_batch(np.random.default_rng(0), 4, 32, 5, 100)
  dtypes = {k: v.dtype for k, v in b.items()}
  assert dtypes == {**{k: np.int32 for k in batch_lib.PRETRAINING_KEYS}, "masked_lm_weights": np.float32}
  assert b["input_ids"].shape == (4, 32) and b["masked_lm_ids"].shape == (4, 5)
  assert (b["input_ids"][:, 0] == synthetic.CLS_ID).all()
  real = b["masked_lm_weights"] > 0
  rows = np.nonzero(real)[0]
  assert (b["input_ids"][rows, b["masked_lm_positions"][real]] == synthetic.MASK_ID).all()
  assert (b["attention_mask"][rows, b["masked_lm_positions"][real]] == 1).all()
  it = synthetic.SyntheticIterator(batch_size=2, seq_len=16, num_predictions=3, vocab_size=50)
  next(it)
  state = it.get_state()
  after = next(it)
  it.set_state(state)
  np.testing.assert_array_equal(next(it)["input_ids"], after["input_ids"])
