"""The loader's contract, determinism, resume and host slicing, and the batch statistics."""
import json

import numpy as np
import pytest
from tests.helpers.data import FIRST_WORD_ID, doc_of_token

from data_pipeline import instances
from bert_jax.batch import PRETRAINING_KEYS as CONTRACT_KEYS
from data_pipeline.loader import (LoaderConfig, make_pretraining_iterator,
                                  read_manifest)

L, P = 64, 10


def _config(data_dir, **kw):
  base = dict(global_batch_size=32, max_seq_length=L, max_predictions_per_seq=P, seed=3)
  base.update(kw)
  return LoaderConfig(data_dir, **base)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    for k in CONTRACT_KEYS:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _many(data_dir, n_batches, **kw):
  it = make_pretraining_iterator(_config(data_dir, **{"global_batch_size": 64, **kw}))
  batches = _take(it, n_batches)
  return {k: np.concatenate([b[k] for b in batches]) for k in CONTRACT_KEYS}, it.manifest


def _one_sentence_chunks(data_dir, n_batches, **kw):
  """Per row of `_many`'s batches: whether BERT's walk closed that chunk after one sentence
  (then B is random whatever the coin says)."""
  it = make_pretraining_iterator(_config(data_dir, **{"global_batch_size": 64, **kw}))
  maker, c = it._maker, it.config
  flags = []
  for step in range(n_batches):
    epoch, starts = maker.example_ids(step)
    index = maker.data.index
    d = instances._decide(index, starts, index.document_of(starts), c.seed, epoch,
                          c.max_seq_length - 3, c.short_seq_prob, c.pair_mode)
    flags.append(d.k == 1)
  return np.concatenate(flags)


def _unmasked(b):
  """input_ids with the masked positions restored to their original tokens."""
  ids = b["input_ids"].copy()
  w = b["masked_lm_weights"] > 0
  ids[np.nonzero(w)[0], b["masked_lm_positions"][w]] = b["masked_lm_ids"][w]
  return ids


def test_contract_shapes_and_dtypes(synthetic_dataset):
  batch = next(make_pretraining_iterator(_config(synthetic_dataset)))
  expected = {"input_ids": ((32, L), np.int32), "token_type_ids": ((32, L), np.int32),
              "attention_mask": ((32, L), np.int32),
              "masked_lm_positions": ((32, P), np.int32), "masked_lm_ids": ((32, P), np.int32),
              "masked_lm_weights": ((32, P), np.float32),
              "next_sentence_labels": ((32,), np.int32)}
  assert set(batch) == set(expected)
  for k, (shape, dtype) in expected.items():
    assert batch[k].shape == shape and batch[k].dtype == dtype, k


def test_structure_token_types_and_other_document_b(synthetic_dataset):
  b, m = _many(synthetic_dataset, 40)
  ids = _unmasked(b)
  rows = np.arange(len(ids))[:, None]
  length = b["attention_mask"].sum(1)
  assert (length <= L).all() and (length >= 5).all()
  assert (b["attention_mask"] == (np.arange(L)[None] < length[:, None])).all()
  assert (ids[:, 0] == m["cls_id"]).all()
  assert (np.where(b["attention_mask"] == 0, ids, 0) == m["pad_id"]).all()
  real = b["attention_mask"] > 0
  is_sep = (ids == m["sep_id"]) & real
  assert (is_sep.sum(1) == 2).all()
  first_sep = is_sep.argmax(1)
  assert (ids[rows[:, 0], length - 1] == m["sep_id"]).all()
  pos = np.arange(L)[None]
  expected_types = ((pos > first_sep[:, None]) & real).astype(np.int32)
  np.testing.assert_array_equal(b["token_type_ids"], expected_types)
  content = real & (ids >= FIRST_WORD_ID)
  a_tok = content & (b["token_type_ids"] == 0)
  b_tok = content & (b["token_type_ids"] == 1)
  assert a_tok.any(1).all() and b_tok.any(1).all()
  docs = doc_of_token(ids)
  for r in range(len(ids)):
    da, db = np.unique(docs[r][a_tok[r]]), np.unique(docs[r][b_tok[r]])
    assert len(da) == 1 and len(db) == 1, r  # Each segment comes from one document.
    assert (da[0] != db[0]) == bool(b["next_sentence_labels"][r]), r


def test_nsp_and_masking_statistics(synthetic_dataset):
  b, m = _many(synthetic_dataset, 80)  # 5120 sequences over several epochs.
  labels = b["next_sentence_labels"]
  # The coin is fair; as in BERT, a one-sentence chunk (a one-sentence document, a
  # document's last sentence, a sentence longer than a short target) always gets a random B,
  # which lifts the overall rate above 1/2 by half the share of such chunks.
  single = _one_sentence_chunks(synthetic_dataset, 80)
  assert 0.02 < single.mean() < 0.15
  assert (labels[single] == 1).all()
  assert abs(labels[~single].mean() - 0.5) < 0.03, labels[~single].mean()
  w = b["masked_lm_weights"] > 0
  r, s = np.nonzero(w)
  pos = b["masked_lm_positions"][r, s]
  orig = b["masked_lm_ids"][r, s]
  special = {m[k] for k in ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")}
  assert not np.isin(orig, list(special)).any()
  assert (b["attention_mask"][r, pos] == 1).all()
  # Positions unique and increasing within a row; padding slots are 0 with weight 0.
  p = np.where(w, b["masked_lm_positions"], L + np.arange(P))
  assert (np.diff(np.sort(p, 1), axis=1) > 0).all()
  assert (np.diff(np.where(w, b["masked_lm_positions"], 10**6), axis=1)[w[:, 1:]] > 0).all()
  assert (b["masked_lm_positions"][~w] == 0).all() and (b["masked_lm_ids"][~w] == 0).all()
  ids = b["input_ids"].copy()
  ids[r, pos] = orig
  maskable = (b["attention_mask"] > 0) & ~np.isin(ids, list(special))
  assert abs(w.sum() / maskable.sum() - 0.15) < 0.01
  now = b["input_ids"][r, pos]
  frac_mask = np.mean(now == m["mask_id"])
  frac_keep = np.mean(now == orig)
  frac_random = 1 - frac_mask - frac_keep
  assert abs(frac_mask - 0.8) < 0.02 and abs(frac_keep - 0.1) < 0.02
  assert abs(frac_random - 0.1) < 0.02
  assert not np.isin(now[now != m["mask_id"]], list(special)).any()
  # Unmasked positions are untouched.
  assert (b["input_ids"] != ids).sum() == (now != orig).sum()


def test_same_seed_same_batches_new_epoch_new_masks(synthetic_dataset):
  a = _take(make_pretraining_iterator(_config(synthetic_dataset)), 6)
  b = _take(make_pretraining_iterator(_config(synthetic_dataset)), 6)
  _assert_batches_equal(a, b)
  c = next(make_pretraining_iterator(_config(synthetic_dataset, seed=4)))
  assert not np.array_equal(a[0]["input_ids"], c["input_ids"])


def test_epochs_reshuffle_and_remask(synthetic_dataset):
  it = make_pretraining_iterator(_config(synthetic_dataset, num_epochs=2))
  n = it.batches_per_epoch
  batches = list(it)
  # Each epoch walks the documents anew (random B's put sentences back), so its length
  # varies a little; the iterator stops after exactly two.
  assert len(batches) == n + it.batches_in_epoch(1)
  assert len({it.batches_in_epoch(e) for e in range(8)}) > 1
  e0 = np.concatenate([x["input_ids"] for x in batches[:n]])
  e1 = np.concatenate([x["input_ids"] for x in batches[n:n + n]])
  assert not np.array_equal(e0[:len(e1)], e1[:len(e0)])


def test_mid_epoch_resume_equals_uninterrupted(synthetic_dataset):
  cfg = _config(synthetic_dataset)
  it = make_pretraining_iterator(cfg)
  n = it.batches_per_epoch
  full = _take(it, n + 4)  # Crosses an epoch boundary.
  for stop in (2, n - 1, n + 1):
    first = make_pretraining_iterator(cfg)
    _take(first, stop)
    state = json.loads(json.dumps(first.get_state()))
    resumed = make_pretraining_iterator(cfg)
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, n + 4 - stop), full[stop:])


def test_resume_rejects_other_settings(synthetic_dataset):
  state = make_pretraining_iterator(_config(synthetic_dataset)).get_state()
  other = make_pretraining_iterator(_config(synthetic_dataset, seed=9))
  with pytest.raises(ValueError, match="different"):
    other.set_state(state)


def test_host_slices_are_disjoint_and_make_up_the_global_batch(synthetic_dataset):
  one = _take(make_pretraining_iterator(_config(synthetic_dataset)), 3)
  for count in (2, 4):
    hosts = [_take(make_pretraining_iterator(
        _config(synthetic_dataset, process_index=i, process_count=count)), 3)
             for i in range(count)]
    for step in range(3):
      for k in CONTRACT_KEYS:
        joined = np.concatenate([h[step][k] for h in hosts])
        np.testing.assert_array_equal(joined, one[step][k], err_msg=k)


def test_worker_processes_give_the_same_stream(synthetic_dataset):
  a = _take(make_pretraining_iterator(_config(synthetic_dataset)), 5)
  it = make_pretraining_iterator(_config(synthetic_dataset, worker_count=1))
  _assert_batches_equal(_take(it, 5), a)
  it.close()


def test_eval_split_is_repeatable_and_finite(synthetic_dataset):
  cfg = _config(synthetic_dataset, split="eval", num_epochs=1, global_batch_size=8)
  a, b = list(make_pretraining_iterator(cfg)), list(make_pretraining_iterator(cfg))
  assert len(a) == make_pretraining_iterator(cfg).batches_per_epoch > 0
  _assert_batches_equal(a, b)
  keep = list(make_pretraining_iterator(
      _config(synthetic_dataset, split="eval", num_epochs=1, global_batch_size=8,
              drop_remainder=False)))
  assert sum(len(x["input_ids"]) for x in keep) >= sum(len(x["input_ids"]) for x in a)


def test_sop_and_none_modes(synthetic_dataset):
  sop = _many(synthetic_dataset, 20, pair_mode="sop")[0]
  assert abs(sop["next_sentence_labels"].mean() - 0.5) < 0.05
  ids = _unmasked(sop)
  real = (sop["attention_mask"] > 0) & (ids >= FIRST_WORD_ID)
  docs = np.where(real, doc_of_token(ids), -1)
  # SOP: both segments from the same document.
  assert all(len(np.unique(d[d >= 0])) == 1 for d in docs)
  none, m = _many(synthetic_dataset, 5, pair_mode="none")
  assert (none["next_sentence_labels"] == 0).all() and (none["token_type_ids"] == 0).all()
  assert ((none["input_ids"] == m["sep_id"]).sum(1) == 1).all()


def test_clear_errors(tmp_path, synthetic_dataset):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
    read_manifest(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
    make_pretraining_iterator(LoaderConfig(str(tmp_path)))
  with pytest.raises(ValueError, match="multiple of process_count"):
    make_pretraining_iterator(_config(synthetic_dataset, global_batch_size=30, process_count=4))
  with pytest.raises(ValueError, match="pair_mode"):
    make_pretraining_iterator(_config(synthetic_dataset, pair_mode="xyz"))
  with pytest.raises(ValueError, match="fewer than one global batch"):
    make_pretraining_iterator(_config(synthetic_dataset, global_batch_size=100000))
