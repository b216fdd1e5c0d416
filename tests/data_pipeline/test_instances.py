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
  starts = instances.epoch_examples(INDEX, seed, epoch, L, short, mode)
  return starts, instances.plan_pairs(INDEX, starts, seed, epoch, L, short, mode)


def _bert_truncate(la, lb, max_num_tokens):
  """truncate_seq_pair's lengths, one token at a time: B on ties, as its
  `tokens_a if len(tokens_a) > len(tokens_b) else tokens_b` (test_nsp_conformance checks
  this against the reference's recorded outcomes)."""
  while la + lb > max_num_tokens:
    if la > lb:
      la -= 1
    else:
      lb -= 1
  return la, lb


def _u(stream, start, seed=0, epoch=0):
  return float(randomness.uniform(seed, epoch, stream, np.array([start]))[0])


def _bert_walk(doc, seed=0, epoch=0, short=0.1, max_num_tokens=L - 3):
  """create_instances_from_document's loop, sentence by sentence, with the same draws
  (named by the chunk's first sentence): [(first sentence, A sentences, B sentences or
  None for a random B)]."""
  first = int(INDEX.doc_first_sent[doc])
  document = LENGTHS[first:first + COUNTS[doc]]
  out, chunk, length, i = [], [], 0, 0
  while i < len(document):
    chunk.append(first + i)
    length += document[i]
    start = chunk[0]
    target = max_num_tokens
    if _u(randomness.SHORT_SEQ, start, seed, epoch) < short:
      target = int(randomness.randint(2, max_num_tokens,
                                      _u(randomness.SHORT_LEN, start, seed, epoch)))
    if i == len(document) - 1 or length >= target:
      a_end = 1
      if len(chunk) >= 2:
        a_end = int(randomness.randint(1, len(chunk) - 1,
                                       _u(randomness.A_END, start, seed, epoch)))
      if len(chunk) == 1 or _u(randomness.IS_RANDOM_NEXT, start, seed, epoch) < 0.5:
        out.append((start, chunk[:a_end], None))
        i -= len(chunk) - a_end  # BERT puts the unused sentences back.
      else:
        out.append((start, chunk[:a_end], chunk[a_end:]))
      chunk, length = [], 0
    i += 1
  return out


def test_walk_equals_berts_loop_sentence_by_sentence():
  for seed, epoch in ((0, 0), (3, 7)):
    starts = instances.epoch_examples(INDEX, seed, epoch, L, 0.1, "nsp")
    plan = instances.plan_pairs(INDEX, starts, seed, epoch, L, 0.1, "nsp")
    bounds = INDEX.sent_bounds
    expected = [e for d in range(NUM_DOCS) for e in _bert_walk(d, seed, epoch)]
    np.testing.assert_array_equal(starts, [e[0] for e in expected])
    for r, (start, a, b) in enumerate(expected):
      la = int(bounds[a[-1] + 1] - bounds[a[0]])
      assert plan.label[r] == (b is None)
      if b is not None:
        lb = int(bounds[b[-1] + 1] - bounds[b[0]])
        # Untruncated: exactly BERT's segments; truncated: BERT's lengths, inside them.
        new_a, new_b = _bert_truncate(la, lb, L - 3)
        assert (plan.a_len[r], plan.b_len[r]) == (new_a, new_b)
        assert bounds[a[0]] <= plan.a_start[r] <= bounds[a[0]] + la - new_a
        assert plan.b_start[r] + plan.b_len[r] <= bounds[b[-1] + 1]
      else:
        assert plan.a_len[r] <= la and plan.a_start[r] >= bounds[a[0]]


def test_unused_sentences_go_back_so_every_sentence_is_used_once():
  """Per epoch, the A segments plus the true B segments tile every document exactly."""
  starts, plan = _plan()
  doc = INDEX.document_of(starts)
  d = instances._decide(INDEX, starts, doc, 0, 0, L - 3, 0.1, "nsp")
  used_end = starts + d.advance  # A only when B was random (the rest went back)
  np.testing.assert_array_equal(used_end[:-1][doc[1:] == doc[:-1]],
                                starts[1:][doc[1:] == doc[:-1]])
  np.testing.assert_array_equal(starts[np.r_[True, doc[1:] != doc[:-1]]],
                                INDEX.doc_first_sent[np.unique(doc)])
  ends = np.r_[used_end[:-1][doc[1:] != doc[:-1]], used_end[-1]]
  np.testing.assert_array_equal(ends, INDEX.doc_first_sent[1:][np.unique(doc)])
  assert (d.is_random & (d.k > d.a_end)).sum() > 500  # Put-back happened often.


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
  starts, plan = _plan()
  n = len(plan.label)
  assert n > 2000
  total = plan.a_len + plan.b_len
  assert (total <= L - 3).all() and (plan.a_len >= 1).all() and (plan.b_len >= 1).all()
  neg = plan.label == 1
  # Negatives: B from another document; positives: B continues A in the same document.
  assert (plan.doc_b[neg] != plan.doc_a[neg]).all()
  assert (plan.doc_b[~neg] == plan.doc_a[~neg]).all()
  assert (plan.b_start[~neg] >= plan.a_start[~neg] + plan.a_len[~neg]).all()
  # The coin gives a random B half the time; as in BERT, one-sentence chunks always get one.
  single = instances._decide(INDEX, starts, plan.doc_a, 0, 0, L - 3, 0.1, "nsp").k == 1
  assert (plan.label[single] == 1).all() and single.mean() < 0.15
  assert abs(plan.label[~single].mean() - 0.5) < 0.03, plan.label[~single].mean()
  # Short targets: ~10% of examples, and they are shorter on average.
  assert abs(plan.is_short.mean() - 0.1) < 0.02
  assert total[plan.is_short].mean() < 0.8 * total[~plan.is_short].mean()
  # Segments stay inside their documents.
  doc_start = INDEX.sent_bounds[INDEX.doc_first_sent]
  for seg_start, seg_len, seg_doc in ((plan.a_start, plan.a_len, plan.doc_a),
                                      (plan.b_start, plan.b_len, plan.doc_b)):
    assert (seg_start >= doc_start[seg_doc]).all()
    assert (seg_start + seg_len <= doc_start[seg_doc + 1]).all()


def test_random_document_is_uniform_over_others():
  _, plan = _plan()
  neg = plan.label == 1
  counts = np.bincount(plan.doc_b[neg], minlength=NUM_DOCS)
  expected = neg.sum() / (NUM_DOCS - 1)
  assert counts.max() < expected * 3 + 10


def test_epochs_and_seeds_change_the_draws():
  s0, p0 = _plan(epoch=0)
  s1, p1 = _plan(epoch=1)
  _, q0 = _plan(epoch=0)
  np.testing.assert_array_equal(p0.a_len, q0.a_len)
  # Each document's first chunk exists in every epoch; its draws are new.
  firsts = INDEX.doc_first_sent[:-1]
  r0, r1 = np.searchsorted(s0, firsts), np.searchsorted(s1, firsts)
  assert (p0.label[r0] != p1.label[r1]).mean() > 0.3
  assert len(s0) != len(s1) or not np.array_equal(s0, s1)


def test_sop_and_none():
  _, sop = _plan("sop")
  assert (sop.doc_a == sop.doc_b).all()
  swapped = sop.label == 1
  assert abs(swapped.mean() - 0.5) < 0.03
  # Swapped: B precedes A in the document.
  assert (sop.b_start[swapped] + sop.b_len[swapped] <= sop.a_start[swapped]).all()
  assert (sop.a_start[~swapped] + sop.a_len[~swapped] <= sop.b_start[~swapped]).all()
  starts, none = _plan("none")
  assert (none.b_len == 0).all() and (none.label == 0).all() and (none.a_len <= L - 2).all()
  # Without random B nothing is put back: chunks tile the documents.
  d = instances._decide(INDEX, starts, INDEX.document_of(starts), 0, 0, L - 2, 0.1, "none")
  np.testing.assert_array_equal(np.r_[starts[1:], len(LENGTHS)], starts + d.k)


def test_assemble_layout():
  _, plan = _plan()
  tokens = np.arange(int(LENGTHS.sum())) % 1000 + 10  # Ids >= 10: never special.
  ids, types, att = instances.assemble(plan, lambda starts, _: (tokens, starts), L, 2, 3, 0)
  r = 5
  la, lb = plan.a_len[r], plan.b_len[r]
  a0, b0 = plan.a_start[r], plan.b_start[r]
  expected = np.concatenate([[2], tokens[a0:a0 + la], [3], tokens[b0:b0 + lb], [3]])
  np.testing.assert_array_equal(ids[r, :len(expected)], expected)
  assert (ids[r, len(expected):] == 0).all()
  np.testing.assert_array_equal(types[r, :len(expected)],
                                [0] * (la + 2) + [1] * (lb + 1))
  assert att[r].sum() == len(expected)
