"""Sentence-pair instances with google-research/bert's semantics, planned with NumPy.

`create_instances_from_document` in google-research/bert walks each document sentence by
sentence, closing a *chunk* when its length reaches the target (or the document ends), and
makes one example per chunk. Here the same walk runs for all documents at once
(`epoch_examples`, one vectorised step per chunk position), and every decision about a chunk
is drawn from (seed, epoch, index of the chunk's first sentence) (`_decide`). An example is
therefore named by its first sentence: the walk lists an epoch's examples, and
`plan_pairs` re-derives any of them on any host, in any order, after any resume.

Per chunk (in NSP mode):
- target length: `max_num_tokens`, or with probability `short_seq_prob` uniform on
  [2, max_num_tokens]. The chunk is its first sentences up to the first one that reaches the
  target (or the end of the document).
- A = the first `a_end` sentences, `a_end` uniform on [1, k-1] (k = the chunk's sentences);
  B = the rest (label 0) or, with probability 1/2 or when k == 1, sentences of a uniformly
  chosen *other* document from a uniform start sentence until `target - len(A)` tokens are
  reached (label 1). Then the chunk's unused sentences go back to the stream: the next chunk
  starts right after A, as BERT's `i -= num_unused_segments` does.
- SOP (ALBERT): B is always the true continuation; with probability 1/2 A and B are swapped
  (label 1). A one-sentence chunk is cut at its middle token.
- none (RoBERTa-style full sentences within a document): one segment, label 0.
- The pair is cut to `max_num_tokens` like `truncate_seq_pair`: tokens go from the longer
  segment (B on ties), each from its front or back with probability 1/2. The number removed
  from the front is Binomial(removed, 1/2), drawn exactly.

One deliberate difference: BERT draws the short target once per document, so a short
document-level draw shortens all of that document's chunks and the share of short sequences
depends on document lengths. Here it is drawn per chunk, so `short_seq_prob` is the share of
short sequences, whatever the corpus.

Segments are [start, start + length) ranges of token *coordinates*: a split's sentences are
stored back to back (records.py), so sentence s spans [bounds[s], bounds[s + 1]).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from data_pipeline import randomness as rnd

PAIR_MODES = ("nsp", "sop", "none")


@dataclasses.dataclass(frozen=True)
class DocumentIndex:
  """Sentence layout of a split: D documents, S sentences in document order."""
  doc_first_sent: np.ndarray  # int64[D + 1]; document d holds sentences [f[d], f[d + 1])
  sent_bounds: np.ndarray     # int64[S + 1]; sentence s holds coordinates [b[s], b[s + 1])

  @classmethod
  def from_counts(cls, sentence_counts: np.ndarray, sentence_lengths: np.ndarray):
    counts = np.asarray(sentence_counts, dtype=np.int64)
    lengths = np.asarray(sentence_lengths, dtype=np.int64)
    if len(lengths) != counts.sum():
      raise ValueError(f"{counts.sum()} sentences counted but {len(lengths)} lengths given")
    if (lengths < 1).any():
      raise ValueError("every sentence needs at least one token")
    first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return cls(first, bounds)

  @property
  def num_documents(self) -> int:
    return len(self.doc_first_sent) - 1

  @property
  def doc_num_sents(self) -> np.ndarray:
    return np.diff(self.doc_first_sent)

  def document_of(self, sentences: np.ndarray) -> np.ndarray:
    return np.searchsorted(self.doc_first_sent, sentences, side="right") - 1

  def run_length(self, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Tokens in sentences [first, last] (inclusive)."""
    return self.sent_bounds[last + 1] - self.sent_bounds[first]

  def reach(self, first: np.ndarray, last_allowed: np.ndarray, target) -> np.ndarray:
    """The first sentence j >= first whose run [first, j] has >= target tokens, at most
    `last_allowed` (BERT's "add sentences until the length reaches the target")."""
    j = np.searchsorted(self.sent_bounds, self.sent_bounds[first] + target, side="left") - 1
    return np.clip(j, first, last_allowed)


@dataclasses.dataclass(frozen=True)
class _Decisions:
  """The walk's draws for chunks starting at sentences `start` (see module docstring)."""
  start: np.ndarray
  doc: np.ndarray
  is_short: np.ndarray
  target: np.ndarray
  k: np.ndarray           # sentences in the chunk
  a_end: np.ndarray       # sentences in A
  is_random: np.ndarray   # NSP: B from another document (the rest is put back)

  @property
  def advance(self) -> np.ndarray:
    """Sentences consumed: all k, or only A when a random B sends the rest back."""
    return np.where(self.is_random, self.a_end, self.k)


def max_num_tokens_for(max_seq_length: int, pair_mode: str) -> int:
  return max_seq_length - (2 if pair_mode == "none" else 3)


def _decide(index: DocumentIndex, start: np.ndarray, doc: np.ndarray, seed: int, epoch: int,
            max_num_tokens: int, short_seq_prob: float, pair_mode: str) -> _Decisions:
  u = lambda stream: rnd.uniform(seed, epoch, stream, start)
  is_short = u(rnd.SHORT_SEQ) < short_seq_prob
  target = np.where(is_short, rnd.randint(2, max_num_tokens, u(rnd.SHORT_LEN)), max_num_tokens)
  last = index.doc_first_sent[doc + 1] - 1
  k = index.reach(start, last, target) - start + 1
  if pair_mode == "none":
    a_end = k
  else:
    a_end = np.where(k >= 2, rnd.randint(1, np.maximum(k - 1, 1), u(rnd.A_END)), 1)
  if pair_mode == "nsp":
    is_random = (k == 1) | (u(rnd.IS_RANDOM_NEXT) < 0.5)
  else:
    is_random = np.zeros(len(start), dtype=bool)
  return _Decisions(start, doc, is_short, target, k, a_end, is_random)


def epoch_examples(index: DocumentIndex, seed: int, epoch: int, max_seq_length: int,
                   short_seq_prob: float, pair_mode: str) -> np.ndarray:
  """The first sentences (sorted int64) of all of `epoch`'s examples: BERT's document walk,
  run for every document at once, one chunk per step."""
  _check_mode(pair_mode)
  max_num_tokens = max_num_tokens_for(max_seq_length, pair_mode)
  docs = np.flatnonzero(index.doc_num_sents > 0)
  position = index.doc_first_sent[docs]
  end = index.doc_first_sent[docs + 1]
  found = []
  while len(docs):
    found.append(position)
    decided = _decide(index, position, docs, seed, epoch, max_num_tokens, short_seq_prob,
                      pair_mode)
    position = position + decided.advance
    going = position < end
    docs, position, end = docs[going], position[going], end[going]
  return np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)


@dataclasses.dataclass(frozen=True)
class PairPlan:
  """Per example: segment coordinate ranges, their documents, the label, the short flag."""
  doc_a: np.ndarray
  a_start: np.ndarray
  a_len: np.ndarray
  doc_b: np.ndarray
  b_start: np.ndarray
  b_len: np.ndarray
  label: np.ndarray     # int32: NSP 1 = random B; SOP 1 = swapped; none: 0
  is_short: np.ndarray  # bool: the short-target draw fired


def _truncate_pair(la, lb, max_num_tokens):
  """Final lengths after BERT's truncate_seq_pair: one token at a time from the longer
  segment, from B on ties (`tokens_a if len(tokens_a) > len(tokens_b) else tokens_b`)."""
  excess = np.maximum(la + lb - max_num_tokens, 0)
  lo = np.minimum(la, lb)
  d = np.abs(la - lb)
  one_sided = d >= excess
  rest = excess - d  # removed alternately once both are equal, B first
  new_a = np.where(one_sided, np.where(la > lb, la - excess, la), lo - rest // 2)
  new_b = np.where(one_sided, np.where(la > lb, lb, lb - excess), lo - (rest + 1) // 2)
  return new_a, new_b


def _check_mode(pair_mode: str) -> None:
  if pair_mode not in PAIR_MODES:
    raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")


def chunk_sentence_counts(index: DocumentIndex, starts: np.ndarray, seed: int, epoch: int,
                          max_seq_length: int, short_seq_prob: float, pair_mode: str
                          ) -> np.ndarray:
  """Sentences in the chunks of the examples named by `starts` (1: B is always random in
  NSP mode); for statistics such as the NSP rate among multi-sentence chunks."""
  _check_mode(pair_mode)
  starts = np.asarray(starts, dtype=np.int64)
  return _decide(index, starts, index.document_of(starts), seed, epoch,
                 max_num_tokens_for(max_seq_length, pair_mode), short_seq_prob, pair_mode).k


@dataclasses.dataclass(frozen=True)
class _Segments:
  """Per example, before truncation: A and B as coordinate ranges, B's document, label."""
  a_start: np.ndarray
  a_len: np.ndarray
  doc_b: np.ndarray
  b_start: np.ndarray
  b_len: np.ndarray
  label: np.ndarray


def _untruncated(index: DocumentIndex, starts: np.ndarray, doc: np.ndarray, c: _Decisions,
                 seed: int, epoch: int, pair_mode: str) -> _Segments:
  """A and B of the examples named by `starts`, whole sentences, as BERT builds them."""
  start = index.sent_bounds[starts]
  total = index.run_length(starts, starts + c.k - 1)
  la = index.run_length(starts, starts + c.a_end - 1)
  zeros = np.zeros(len(starts), np.int64)
  if pair_mode == "none":
    return _Segments(start, la, doc, zeros, zeros, zeros)
  if pair_mode == "sop":
    # A lone sentence is cut in the middle so that both segments exist.
    la = np.where(c.k == 1, np.maximum(total // 2, 1), la)
    lb = total - la
    swap = rnd.uniform(seed, epoch, rnd.IS_RANDOM_NEXT, starts) < 0.5
    return _Segments(np.where(swap, start + la, start), np.where(swap, lb, la), doc,
                     np.where(swap, start, start + la), np.where(swap, la, lb),
                     swap.astype(np.int64))
  u = lambda stream: rnd.uniform(seed, epoch, stream, starts)
  other = rnd.randint(0, index.num_documents - 2, u(rnd.RANDOM_DOC))
  other = other + (other >= doc)  # Uniform over documents other than this one.
  other_first, other_end = index.doc_first_sent[other], index.doc_first_sent[other + 1]
  rfirst = other_first + rnd.randint(0, other_end - other_first - 1, u(rnd.RANDOM_START))
  rlast = index.reach(rfirst, other_end - 1, c.target - la)
  return _Segments(start, la, np.where(c.is_random, other, doc),
                   np.where(c.is_random, index.sent_bounds[rfirst], start + la),
                   np.where(c.is_random, index.run_length(rfirst, rlast), total - la),
                   c.is_random.astype(np.int64))


def untruncated_pairs(index: DocumentIndex, starts: np.ndarray, seed: int, epoch: int,
                      max_seq_length: int, short_seq_prob: float, pair_mode: str
                      ) -> _Segments:
  """The segments of the examples named by `starts` before `truncate_seq_pair`'s cut
  (for statistics such as how often and how much truncation removes)."""
  _check_mode(pair_mode)
  starts = np.asarray(starts, dtype=np.int64)
  doc = index.document_of(starts)
  c = _decide(index, starts, doc, seed, epoch, max_num_tokens_for(max_seq_length, pair_mode),
              short_seq_prob, pair_mode)
  return _untruncated(index, starts, doc, c, seed, epoch, pair_mode)


def plan_pairs(index: DocumentIndex, starts: np.ndarray, seed: int, epoch: int,
               max_seq_length: int, short_seq_prob: float, pair_mode: str) -> PairPlan:
  """Plans the examples named by their first sentences `starts` (from `epoch_examples`)."""
  _check_mode(pair_mode)
  starts = np.asarray(starts, dtype=np.int64)
  max_num_tokens = max_num_tokens_for(max_seq_length, pair_mode)
  doc = index.document_of(starts)
  c = _decide(index, starts, doc, seed, epoch, max_num_tokens, short_seq_prob, pair_mode)
  s = _untruncated(index, starts, doc, c, seed, epoch, pair_mode)
  if pair_mode == "none":
    new_a, new_b = np.minimum(s.a_len, max_num_tokens), s.b_len
  else:
    new_a, new_b = _truncate_pair(s.a_len, s.b_len, max_num_tokens)
  # The front share of the removed tokens, for A and B with independent bits.
  front_a = rnd.binomial_half(s.a_len - new_a, seed, epoch, rnd.TRUNCATE, starts * 2)
  front_b = rnd.binomial_half(s.b_len - new_b, seed, epoch, rnd.TRUNCATE, starts * 2 + 1)
  return PairPlan(doc, s.a_start + front_a, new_a, s.doc_b, s.b_start + front_b, new_b,
                  s.label.astype(np.int32), c.is_short)


def assemble(plan: PairPlan, gather: Callable[[np.ndarray, np.ndarray], tuple],
             max_seq_length: int, cls_id: int, sep_id: int, pad_id: int,
             two_segments: bool = True):
  """[CLS] A [SEP] B [SEP] [PAD]... as int32 [n, L] input_ids, token_type_ids, attention_mask.

  `gather(starts, lengths)` reads token coordinate ranges and returns (buffer, offsets) with
  buffer[offsets[i] + j] = the token at starts[i] + j (records.TokenReader.gather).
  """
  n = len(plan.a_len)
  buffer, offsets = gather(np.concatenate([plan.a_start, plan.b_start]),
                           np.concatenate([plan.a_len, plan.b_len]))
  pos = np.arange(max_seq_length)[None, :]
  la = plan.a_len[:, None]
  lb = plan.b_len[:, None]
  in_a = (pos >= 1) & (pos <= la)
  in_b = (pos >= la + 2) & (pos < la + 2 + lb)
  used = in_a | in_b
  src = np.where(in_a, offsets[:n, None] + pos - 1, offsets[n:, None] + pos - la - 2)
  ids = np.where(used, buffer[np.where(used, src, 0)], pad_id)
  ids[:, 0] = cls_id
  length = la + (lb + 3 if two_segments else 2)
  sep = (pos == la + 1) | ((pos == la + lb + 2) if two_segments else False)
  ids = np.where(sep, sep_id, ids)
  token_type = (in_b | (two_segments & (pos == la + lb + 2))).astype(np.int32)
  attention = (pos < length).astype(np.int32)
  return ids.astype(np.int32), token_type, attention
