"""Length buckets for fine-tuning: coverage, shapes, shuffling and input order."""
import numpy as np
import pytest

from bert_jax.finetune import bucketing

L = 128


def _lengths(n=500, seed=0):
  return np.random.default_rng(seed).integers(3, L + 1, n)


def _padded_tokens(lengths, widths):
  return int(np.asarray(widths)[bucketing.assign(lengths, widths)].sum())


def test_widths_are_the_least_padding_choice_of_at_most_k():
  """The widths minimise the tokens computed over all choices of <= k multiples of 8
  (checked by brute force), and one bucket is the longest example's width."""
  import itertools

  rng = np.random.default_rng(3)
  sentences = rng.integers(8, 23, 400)  # 8-22 tokens: short sentences at L=128
  assert bucketing.bucket_widths(sentences, L, 1) == (24,)  # not L: nothing needs it
  assert bucketing.bucket_widths(np.array([3, 121]), L, 1) == (L,)
  assert bucketing.bucket_widths(sentences, L, 2) == (16, 24)
  for lengths in (sentences, rng.integers(1, 65, 300), rng.integers(40, 61, 50)):
    candidates = sorted({min(-(-int(n) // 8) * 8, L) for n in lengths})
    for k in (1, 2, 3, 4):
      widths = bucketing.bucket_widths(lengths, L, k)
      assert len(widths) <= k and widths[-1] >= lengths.max() and all(w % 8 == 0 for w in widths)
      best = min(_padded_tokens(lengths, c) for r in range(1, k + 1)
                 for c in itertools.combinations(candidates, r) if c[-1] >= lengths.max())
      assert _padded_tokens(lengths, widths) == best, (k, widths)
  assert bucketing.bucket_widths(np.array([3, 200]), 200, 4) == (8, 200)  # capped at L
  with pytest.raises(ValueError, match="longer than max_seq_length"):
    bucketing.bucket_widths(np.array([129]), L, 4)


def test_widths_lengths_and_assignment():
  mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(bucketing.lengths_of(mask), [3, 1, 0, 5])
  np.testing.assert_array_equal(bucketing.assign([1, 16, 17, 64, 65, 128], (16, 32, 64, 128)),
                                [0, 0, 1, 2, 3, 3])
  with pytest.raises(ValueError, match="wider than the widest bucket"):
    bucketing.assign([129], (16, 32, 64, 128))


def test_train_plan_covers_every_example_once_in_fitting_shuffled_batches():
  lengths = _lengths()
  widths = bucketing.bucket_widths(lengths, L)
  plan = bucketing.train_plan(lengths, widths, 16, seed=1, epoch=0)
  members = np.concatenate([idx for _, idx in plan])
  assert sorted(members.tolist()) == list(range(len(lengths)))
  for width, idx in plan:
    assert width in widths and 0 < len(idx) <= 16
    assert (lengths[idx] <= width).all()
    smaller = [w for w in widths if w < width]
    assert not smaller or (lengths[idx] > max(smaller)).all()  # the narrowest that holds it
  assert len(plan) == bucketing.num_batches(lengths, widths, 16)
  # Shapes mix across the epoch rather than running bucket by bucket.
  shape_order = [w for w, _ in plan]
  assert shape_order != sorted(shape_order)
  # Deterministic per (seed, epoch); another epoch shuffles within and across buckets.
  again = bucketing.train_plan(lengths, widths, 16, seed=1, epoch=0)
  assert all(w == v and (a == b).all() for (w, a), (v, b) in zip(plan, again))
  other = bucketing.train_plan(lengths, widths, 16, seed=1, epoch=1)
  assert [w for w, _ in other] != shape_order
  first_of = lambda p, w: next(idx for width, idx in p if width == w)
  assert set(first_of(plan, 128).tolist()) != set(first_of(other, 128).tolist())


def test_eval_plan_and_scatter_restore_input_order():
  lengths = _lengths(77)
  widths = bucketing.bucket_widths(lengths, L)
  arrays = {"input_ids": np.arange(77 * L).reshape(77, L), "labels": np.arange(77),
            "tags": np.arange(77 * L).reshape(77, L) + 5}
  pieces_seq, pieces_tok, pieces_ids = [], [], []
  for width, idx in bucketing.eval_plan(lengths, widths, 8):
    batch = bucketing.take(arrays, idx, width, L)
    assert batch["input_ids"].shape == (len(idx), width) and batch["labels"].shape == (len(idx),)
    pieces_seq.append((idx, batch["labels"] * 10))            # one output per example
    pieces_tok.append((idx, batch["tags"][..., None] * 1.0))  # one per token
    pieces_ids.append((idx, batch["tags"]))
  np.testing.assert_array_equal(bucketing.scatter_outputs(pieces_seq, 77, L, per_token=False),
                                np.arange(77) * 10)
  tok = bucketing.scatter_outputs(pieces_tok, 77, L, per_token=True)
  ids = bucketing.scatter_outputs(pieces_ids, 77, L, per_token=True)
  assert tok.shape == (77, L, 1)
  width_of = np.asarray(widths)[bucketing.assign(lengths, widths)]
  for i in range(77):
    np.testing.assert_array_equal(tok[i, :width_of[i], 0], arrays["tags"][i, :width_of[i]])
    assert (tok[i, width_of[i]:] == -1e9).all()  # padded floats never win an argmax
    assert (ids[i, width_of[i]:] == 0).all() and (ids[i, :width_of[i]] == arrays["tags"][i, :width_of[i]]).all()
