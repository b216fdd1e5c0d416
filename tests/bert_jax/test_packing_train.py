"""Pretraining with packed rows end to end, and the packing settings refused up front."""

import numpy as np
import pytest

from bert_jax import batch as batch_lib
from bert_jax import partitioning
from launch import sources
from tests.helpers import pretrain as pretrain_testlib

WORDS = 300


def _prepare_short_documents(root):
  """Documents of 1-3 short sentences: at seq 64 most of an unpacked row is padding."""
  return pretrain_testlib.prepare_made_up_corpus(root, words=WORDS, docs=120, sentences=(1, 4),
                                                 words_per_sentence=(2, 8), docs_per_shard=40)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return _prepare_short_documents(str(tmp_path_factory.mktemp("short_documents")))


def test_packed_train_steps_learn_and_count_instances(tmp_path, data_dir):
  config = pretrain_testlib.small_config(
      max_seq_length=64, max_predictions_per_seq=10,
      **{"data.data_dir": data_dir, "data.packing": True, "data.packing_max_instances": 8, "model.vocab_size": 320},
      global_batch_size=4, learning_rate=3e-3)
  source = sources.make_pretraining_source(config, str(tmp_path))
  batch = next(source.train_batches())
  assert set(batch) == set(batch_lib.PRETRAINING_KEYS + batch_lib.PACKED_KEYS)
  assert "instance_ids" not in next(iter(source.eval_batches()))  # eval stays unpacked
  instances = float(batch["instance_weights"].sum())
  assert instances > 3 * len(batch["input_ids"])  # the rows really are packed
  mesh = pretrain_testlib.one_device_mesh()
  state, steps = pretrain_testlib.build(config, mesh)
  device_batch = partitioning.host_to_device(batch_lib.pretraining_arrays(batch), mesh)
  losses = []
  for _ in range(6):
    state, metrics = steps.train(state, device_batch)
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.3, losses
  # NSP accuracy is a share of the real instances (not of rows or slots).
  correct = float(metrics["nsp_accuracy"]) * instances
  assert abs(correct - round(correct)) < 1e-3 and float(metrics["nsp_accuracy"]) > 0


@pytest.mark.parametrize("fields,message", [
    (dict(max_seq_length=9), r"max_seq_length=9 is too short \(a row holds at most 1\)"),
    ({"data.packing_max_instances": 9}, r"packing_max_instances=9 must be in \[1, 6\]"),
    ({"data.synthetic": True}, r"cannot be combined with config.data.synthetic"),
])
def test_bad_packing_settings_are_refused_before_compiling(tmp_path, data_dir, fields, message):
  # The source is built (and refuses) before train_and_evaluate compiles anything.
  config = pretrain_testlib.small_config(
      **{"data.data_dir": data_dir, "data.packing": True, "model.vocab_size": 320,
                            "max_predictions_per_seq": 5, **fields})
  with pytest.raises(ValueError, match=message):
    next(sources.make_pretraining_source(config, str(tmp_path)).train_batches())
