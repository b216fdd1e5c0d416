"""Masking: whole-word selection, caps, and fresh masks per epoch."""
import numpy as np

from data_pipeline import masking

V = 1000
SPECIAL = [0, 1, 2, 3, 4]
rng = np.random.default_rng(1)
WORD_START = rng.random(V) < 0.6  # Other ids are continuations ("##x" or no "▁").
WORD_START[SPECIAL] = True
TABLES = masking.MaskingTables.create(V, SPECIAL, WORD_START, mask_id=4)


def _batch(n=3000, length=64):
  ids = rng.integers(5, V, size=(n, length)).astype(np.int32)
  lengths = rng.integers(10, length + 1, size=n)
  att = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = 2
  ids[np.arange(n), lengths - 1] = 3
  ids[att == 0] = 0
  return ids, att


def _words(ids, att):
  """Word id per token, as whole-word masking must see it."""
  maskable = ~TABLES.special[ids] & (att > 0)
  prev = np.ones_like(maskable)
  prev[:, 1:] = ~maskable[:, :-1]
  return np.cumsum(WORD_START[ids] | ~maskable | prev, axis=1)


def test_whole_words_are_masked_together():
  ids, att = _batch()
  out = masking.mask_tokens(ids, att, np.arange(len(ids)), TABLES, 0, 0,
                            masking.MaskingRule(0.15, 20, whole_word=True))
  w = out["masked_lm_weights"] > 0
  chosen = np.zeros(ids.shape, bool)
  r, s = np.nonzero(w)
  chosen[r, out["masked_lm_positions"][r, s]] = True
  words = _words(ids, att)
  for row in range(200):
    for word in np.unique(words[row][chosen[row]]):
      assert chosen[row][words[row] == word].all()  # Never a part of a word.
  maskable = ~TABLES.special[ids] & (att > 0)
  budget = np.minimum(20, np.maximum(1, np.floor(maskable.sum(1) * 0.15 + 0.5)))
  assert (w.sum(1) <= budget).all()
  # Stopping at the first word that does not fit costs a little; still near 15%.
  assert 0.12 < w.sum() / maskable.sum() <= 0.15
  np.testing.assert_array_equal(out["masked_lm_ids"][w], ids[r, out["masked_lm_positions"][r, s]])


def test_cap_minimum_and_no_input_mutation():
  ids, att = _batch(500)
  before = ids.copy()
  out = masking.mask_tokens(ids, att, np.arange(500), TABLES, 0, 0, masking.MaskingRule(0.5, 5))
  np.testing.assert_array_equal(ids, before)
  maskable = (~TABLES.special[ids] & (att > 0)).sum(1)
  expected = np.minimum(5, np.floor(maskable * 0.5 + 0.5))  # Capped at max_predictions.
  np.testing.assert_array_equal(out["masked_lm_weights"].sum(1), expected)
  short_ids = np.array([[2, 7, 3, 0, 0, 0]], np.int32)
  short_att = (short_ids > 0).astype(np.int32)
  short = masking.mask_tokens(short_ids, short_att, [0], TABLES, 0, 0,
                              masking.MaskingRule(0.15, 3))
  assert short["masked_lm_weights"].tolist() == [[1.0, 0.0, 0.0]]  # At least one.
  assert short["masked_lm_positions"][0, 0] == 1


def test_masks_change_with_epoch_and_not_with_batch_composition():
  ids, att = _batch(400)
  keys = np.arange(400)
  e0 = masking.mask_tokens(ids, att, keys, TABLES, 0, 0, masking.MaskingRule(0.15, 20))
  e1 = masking.mask_tokens(ids, att, keys, TABLES, 0, 1, masking.MaskingRule(0.15, 20))
  differ = (e0["masked_lm_positions"] != e1["masked_lm_positions"]).any(1)
  assert differ.mean() > 0.95
  part = masking.mask_tokens(ids[100:150], att[100:150], keys[100:150], TABLES, 0, 0,
                             masking.MaskingRule(0.15, 20))
  for k in part:
    np.testing.assert_array_equal(part[k], e0[k][100:150])
