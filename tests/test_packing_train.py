"""Pretraining with packed rows end to end, and the packing settings refused up front."""
import os

import numpy as np
import pytest

import pretrain_testlib
from bert_jax import train

WORDS = 300


def _prepare_short_documents(root):
  """Documents of 1-3 short sentences: at seq 64 most of an unpacked row is padding."""
  from data_pipeline import prepare as prepare_lib
  vocab = os.path.join(root, "vocab.txt")
  with open(vocab, "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                      + [f"w{i}" for i in range(WORDS)]) + "\n")
  rng = np.random.default_rng(0)
  corpus = os.path.join(root, "corpus.txt")
  with open(corpus, "w") as f:
    for _ in range(120):
      for _ in range(int(rng.integers(1, 4))):
        f.write(" ".join(f"w{i}" for i in rng.integers(0, WORDS, int(rng.integers(2, 8)))) + "\n")
      f.write("\n")
  data_dir = os.path.join(root, "data")
  prepare_lib.prepare(data_dir, vocab, inputs=corpus, eval_fraction=0.2, docs_per_shard=40,
                      progress=False)
  return data_dir


def test_packed_train_steps_learn_and_count_instances(tmp_path):
  data_dir = _prepare_short_documents(str(tmp_path))
  config = pretrain_testlib.small_config(
      data_dir=data_dir, packing=True, max_seq_length=64, max_predictions_per_seq=10,
      packing_max_instances=8, **{"model.vocab_size": 320}, global_batch_size=4,
      learning_rate=3e-3)
  train.validate_config(config)
  batch = next(train.make_train_iterator(config, data_dir))
  assert set(batch) == set(train.BATCH_KEYS + train.PACKED_KEYS)
  instances = float(batch["instance_weights"].sum())
  assert instances > 3 * len(batch["input_ids"])  # the rows really are packed
  mesh = pretrain_testlib.one_device_mesh()
  state, steps = pretrain_testlib.build(config, mesh)
  device_batch = train.partitioning.host_to_device(train.contract_batch(batch), mesh)
  losses = []
  for _ in range(6):
    state, metrics = steps.train(state, device_batch)
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.3, losses
  # NSP accuracy is a share of the real instances (not of rows or slots).
  correct = float(metrics["nsp_accuracy"]) * instances
  assert abs(correct - round(correct)) < 1e-3 and float(metrics["nsp_accuracy"]) > 0


@pytest.mark.parametrize("fields,message", [
    (dict(max_seq_length=8), r"config.max_seq_length=8 is too short \(at least 10 tokens\)"),
    (dict(packing_max_instances=9), r"config.packing_max_instances=9 must be in \[1, 6\]"),
    (dict(synthetic_data=True), r"cannot be combined with config.synthetic_data"),
])
def test_bad_packing_settings_are_refused_before_compiling(tmp_path, fields, message):
  config = pretrain_testlib.small_config(packing=True, data_dir=str(tmp_path), **fields)
  with pytest.raises(ValueError, match=message):
    train.validate_config(config)
