"""Pair planning against google-research/bert's semantics, statistically and exactly."""
import numpy as np

from data_pipeline import instances, randomness

rng = np.random.default_rng(0)
NUM_DOCS = 800
COUNTS = rng.integers(1, 50, size=NUM_DOCS)
LENGTHS = rng.integers(1, 40, size=int(COUNTS.sum()))
INDEX = instances.DocumentIndex.from_counts(COUNTS, LENGTHS)
L = 128


def _plan(mode="nsp", epoch=0, short=0.1, seed=0):
  chunks = instances.build_chunks(INDEX, L - 3)
  ids = np.arange(len(chunks))
  return chunks, instances.plan_pairs(INDEX, chunks, ids, seed, epoch, L, short, mode)


def _bert_truncate(la, lb, max_num_tokens):
  """truncate_seq_pair's lengths, one token at a time as BERT does."""
  while la + lb > max_num_tokens:
    if la > lb:
      la -= 1
    else:
      lb -= 1
  return la, lb


def test_chunks_cover_every_sentence_once_in_order():
  chunks = instances.build_chunks(INDEX, L - 3)
  assert chunks.num_sents.sum() == len(LENGTHS)
  np.testing.assert_array_equal(np.concatenate([[0], np.cumsum(chunks.num_sents)[:-1]]),
                                chunks.first_sent)
  assert (chunks.doc == np.repeat(np.arange(NUM_DOCS), COUNTS)[chunks.first_sent]).all()


def test_truncation_matches_bert_exactly():
  la = rng.integers(0, 200, size=5000)
  lb = rng.integers(0, 200, size=5000)
  a, b = instances._truncate_pair(la, lb, 125)
  expected = np.array([_bert_truncate(x, y, 125) for x, y in zip(la, lb)])
  np.testing.assert_array_equal(np.stack([a, b], 1), expected)


def test_binomial_half_is_fair():
  n = np.full(20000, 90)
  draws = randomness.binomial_half(n, 0, 0, randomness.TRUNCATE, np.arange(20000))
  assert draws.min() >= 0 and draws.max() <= 90
  assert abs(draws.mean() - 45) < 0.3 and abs(draws.var() - 22.5) < 1.5


def test_nsp_pairs():
  chunks, plan = _plan()
  n = len(plan.label)
  assert n > 2000
  total = plan.a_len + plan.b_len
  assert (total <= L - 3).all() and (plan.a_len >= 1).all() and (plan.b_len >= 1).all()
  neg = plan.label == 1
  # Negatives: B from another document; positives: B continues A in the same document.
  assert (plan.doc_b[neg] != plan.doc_a[neg]).all()
  assert (plan.doc_b[~neg] == plan.doc_a[~neg]).all()
  assert (plan.b_start[~neg] >= plan.a_start[~neg] + plan.a_len[~neg]).all()
  # Among chunks that can be split, B is random half the time (one-sentence chunks always
  # get a random B, as in BERT).
  multi = chunks.num_sents >= 2
  target_ok = ~plan.is_short
  sel = multi & target_ok
  assert abs(plan.label[sel].mean() - 0.5) < 0.03
  # Short targets: ~10% of examples, and they are shorter on average.
  assert abs(plan.is_short.mean() - 0.1) < 0.02
  assert total[plan.is_short].mean() < 0.8 * total[~plan.is_short].mean()
  # Segments stay inside their documents.
  doc_tokens = np.add.reduceat(LENGTHS, INDEX.doc_first_sent)
  assert (plan.a_start + plan.a_len <= doc_tokens[plan.doc_a]).all()
  assert (plan.b_start + plan.b_len <= doc_tokens[plan.doc_b]).all()


def test_random_document_is_uniform_over_others():
  chunks, plan = _plan()
  neg = plan.label == 1
  counts = np.bincount(plan.doc_b[neg], minlength=NUM_DOCS)
  expected = neg.sum() / (NUM_DOCS - 1)
  assert counts.max() < expected * 3 + 10


def test_epochs_and_seeds_change_the_draws():
  _, p0 = _plan(epoch=0)
  _, p1 = _plan(epoch=1)
  _, q0 = _plan(epoch=0)
  np.testing.assert_array_equal(p0.a_len, q0.a_len)
  assert (p0.label != p1.label).mean() > 0.3


def test_sop_and_none():
  _, sop = _plan("sop")
  assert (sop.doc_a == sop.doc_b).all()
  swapped = sop.label == 1
  assert abs(swapped.mean() - 0.5) < 0.03
  # Swapped: B precedes A in the document.
  assert (sop.b_start[swapped] + sop.b_len[swapped] <= sop.a_start[swapped]).all()
  assert (sop.a_start[~swapped] + sop.a_len[~swapped] <= sop.b_start[~swapped]).all()
  chunks = instances.build_chunks(INDEX, L - 2)
  none = instances.plan_pairs(INDEX, chunks, np.arange(len(chunks)), 0, 0, L, 0.1, "none")
  assert (none.b_len == 0).all() and (none.label == 0).all() and (none.a_len <= L - 2).all()


def test_assemble_layout():
  _, plan = _plan()
  doc_tokens = np.add.reduceat(LENGTHS, INDEX.doc_first_sent)
  base = np.concatenate([[0], np.cumsum(doc_tokens)[:-1]])
  tokens = np.arange(int(doc_tokens.sum())) % 1000 + 10  # Ids >= 10: never special.
  ids, types, att = instances.assemble(plan, tokens, base, L, 2, 3, 0)
  r = 5
  la, lb = plan.a_len[r], plan.b_len[r]
  a0 = base[plan.doc_a[r]] + plan.a_start[r]
  b0 = base[plan.doc_b[r]] + plan.b_start[r]
  expected = np.concatenate([[2], tokens[a0:a0 + la], [3], tokens[b0:b0 + lb], [3]])
  np.testing.assert_array_equal(ids[r, :len(expected)], expected)
  assert (ids[r, len(expected):] == 0).all()
  np.testing.assert_array_equal(types[r, :len(expected)],
                                [0] * (la + 2) + [1] * (lb + 1))
  assert att[r].sum() == len(expected)
