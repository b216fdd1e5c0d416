"""Packed pretraining rows: the packer's constraints, each instance exactly as the unpacked
loader makes it, and determinism across hosts and resumes."""
import numpy as np
import pytest

from bert_jax.batch import PACKED_KEYS, PRETRAINING_KEYS as CONTRACT_KEYS
from data_pipeline import packing
from data_pipeline.loader import LoaderConfig, make_pretraining_iterator

L, P, K = 128, 20, 6


def _config(data_dir, **kw):
  base = dict(global_batch_size=16, max_seq_length=L, max_predictions_per_seq=P, seed=5,
              packing=True, packing_max_instances=K, packing_window=200)
  base.update(kw)
  return LoaderConfig(data_dir, **base)


def test_best_fit_decreasing_respects_every_limit():
  rng = np.random.default_rng(0)
  lengths = rng.integers(5, 60, 500)
  preds = packing.prediction_bound(lengths - 3, 0.15, 8)
  rows = packing.best_fit_decreasing(lengths, preds, 64, 10, 4)
  members = np.concatenate(rows)
  assert sorted(members.tolist()) == list(range(500))  # every item exactly once
  for row in rows:
    assert lengths[row].sum() <= 64 and preds[row].sum() <= 10 and len(row) <= 4
    assert list(lengths[row]) == sorted(lengths[row], reverse=True)
  # Close to the bound: the tokens alone need ceil(sum / 64) rows.
  assert len(rows) <= 1.1 * np.ceil(lengths.sum() / 64)
  assert packing.best_fit_decreasing(lengths, preds, 64, 10, 4) == rows  # deterministic
  # Best fit: 6 and 6 share a row, 4 4 2 2 the other; two slots per row force three rows.
  assert packing.best_fit_decreasing([6, 6, 4, 4, 2, 2], [0] * 6, 12, 9, 4) == [[0, 1], [2, 3, 4, 5]]
  assert len(packing.best_fit_decreasing([6, 6, 4, 4, 2, 2], [0] * 6, 12, 9, 2)) == 3
  with pytest.raises(ValueError, match="exceeds a row of 12 tokens"):
    packing.best_fit_decreasing([13], [1], 12, 9, 2)


@pytest.mark.parametrize("kw", [{}, {"pair_mode": "sop", "whole_word_masking": True},
                                {"pair_mode": "none"}])
def test_packed_instances_are_the_unpacked_loaders_instances(synthetic_dataset, kw):
  packed_it = make_pretraining_iterator(_config(synthetic_dataset, **kw))
  plain = make_pretraining_iterator(_config(synthetic_dataset, packing=False, **kw))._maker
  m = packed_it.manifest
  assert packing.max_instances_for(L) == L // 5
  if kw.get("pair_mode") == "none":
    assert packing.max_instances_for(L, two_segments=False) == L // 3
  for step in range(3):
    b = next(packed_it)
    assert set(b) == set(CONTRACT_KEYS + PACKED_KEYS)
    assert b["input_ids"].shape == (16, L) and b["cls_positions"].shape == (16, K)
    assert b["next_sentence_labels"].shape == (16, K) and b["masked_lm_weights"].shape == (16, P)
    epoch, ids, rows = packed_it._maker.packed_example_ids(step)
    plan = plain._plan(ids, epoch)
    types, attention, masked = plain._make(plan, ids, epoch, L)  # the unpacked rows
    lengths = attention.sum(1)
    assert b["instance_weights"].sum() == len(ids) > 16  # more instances than rows
    offset = np.zeros(16, np.int64)
    slot = np.zeros(16, np.int64)
    pred_at = np.zeros(16, np.int64)
    for i in range(len(ids)):
      r, n, o, s = rows[i], lengths[i], offset[rows[i]], slot[rows[i]]
      span = slice(o, o + n)
      np.testing.assert_array_equal(b["input_ids"][r, span], masked["input_ids"][i, :n])
      np.testing.assert_array_equal(b["token_type_ids"][r, span], types[i, :n])
      np.testing.assert_array_equal(b["position_ids"][r, span], np.arange(n))
      assert (b["instance_ids"][r, span] == s + 1).all()
      assert b["cls_positions"][r, s] == o and b["input_ids"][r, o] == m["cls_id"]
      assert b["next_sentence_labels"][r, s] == plan.label[i] and b["instance_weights"][r, s] == 1
      real = masked["masked_lm_weights"][i] > 0
      q = slice(pred_at[r], pred_at[r] + real.sum())
      np.testing.assert_array_equal(b["masked_lm_positions"][r, q],
                                    masked["masked_lm_positions"][i, real] + o)
      np.testing.assert_array_equal(b["masked_lm_ids"][r, q], masked["masked_lm_ids"][i, real])
      offset[r] += n
      slot[r] += 1
      pred_at[r] += real.sum()
    pos = np.arange(L)[None]
    assert (b["instance_ids"][pos >= offset[:, None]] == 0).all()  # the rest is padding
    assert (b["input_ids"][pos >= offset[:, None]] == m["pad_id"]).all()
    np.testing.assert_array_equal(b["attention_mask"], (b["instance_ids"] > 0).astype(np.int32))
    np.testing.assert_array_equal(b["masked_lm_weights"].sum(1), pred_at)
    np.testing.assert_array_equal(b["instance_weights"].sum(1), slot)
    assert (b["instance_weights"][np.arange(K)[None] >= slot[:, None]] == 0).all()
  # Less padding than the same stream unpacked.
  unpacked = next(make_pretraining_iterator(_config(synthetic_dataset, packing=False, **kw)))
  assert b["attention_mask"].mean() > max(0.95, unpacked["attention_mask"].mean() + 0.1)


def test_packed_stream_is_host_independent_and_resumes_exactly(synthetic_dataset):
  whole = make_pretraining_iterator(_config(synthetic_dataset))
  batches = [next(whole) for _ in range(4)]
  hosts = [make_pretraining_iterator(_config(synthetic_dataset, process_index=p, process_count=2))
           for p in range(2)]
  for b in batches[:2]:
    parts = [next(h) for h in hosts]
    for k in CONTRACT_KEYS + PACKED_KEYS:
      np.testing.assert_array_equal(np.concatenate([x[k] for x in parts]), b[k], err_msg=k)
  again = make_pretraining_iterator(_config(synthetic_dataset))
  first = make_pretraining_iterator(_config(synthetic_dataset))
  next(first), next(first)
  again.set_state(first.get_state())
  for b in batches[2:]:
    got = next(again)
    for k in CONTRACT_KEYS + PACKED_KEYS:
      np.testing.assert_array_equal(got[k], b[k], err_msg=k)
  # A packed stream's position does not resume an unpacked one (or another packing).
  plain = make_pretraining_iterator(_config(synthetic_dataset, packing=False))
  with pytest.raises(ValueError, match="different data set or loader settings"):
    plain.set_state(first.get_state())
  # Unpacked streams ignore the packing knobs (their saved positions stay valid).
  other = make_pretraining_iterator(_config(synthetic_dataset, packing=False, packing_window=7))
  other.set_state(plain.get_state())


def test_bad_packing_settings_name_the_field(synthetic_dataset):
  with pytest.raises(ValueError, match=r"packing_max_instances=30 must be in \[1, 25\]"):
    make_pretraining_iterator(_config(synthetic_dataset, packing_max_instances=30))
  with pytest.raises(ValueError, match="packing_window=0"):
    make_pretraining_iterator(_config(synthetic_dataset, packing_window=0))
