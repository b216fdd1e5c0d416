"""Sentence-pair instances with google-research/bert's semantics, planned for a whole batch
at once with NumPy.

The corpus is cut once into *chunks*: runs of consecutive sentences of one document whose
first tokens fall in the same window of `max_num_tokens` tokens (`build_chunks`; one
vectorised pass, no per-sentence Python). A chunk plays the role of BERT's `current_chunk`
in `create_instances_from_document`. For each example (one chunk) and epoch:

- target length: `max_num_tokens`, or with probability `short_seq_prob` uniform on
  [2, max_num_tokens]; the example uses the chunk's first sentences up to that target.
- NSP: A = the first `a_end` sentences, `a_end` uniform on [1, k-1] (k = sentences used);
  B = the rest (label 0) or, with probability 1/2 or when k == 1, sentences of a uniformly
  chosen *other* document from a uniform start sentence until `target - len(A)` tokens are
  reached (label 1).
- SOP (ALBERT): B is always the true continuation; with probability 1/2 A and B are swapped
  (label 1). A one-sentence chunk is cut at its middle token.
- none (RoBERTa-style full sentences within a document): one segment, label 0.
- The pair is cut to `max_num_tokens` like `truncate_seq_pair`: tokens are removed from the
  longer segment, each from its front or back with probability 1/2. The number removed from
  the front is Binomial(removed, 1/2), drawn exactly.

Known difference from BERT: BERT walks each document once per duplication and puts a random
B's unused sentences back into the stream; here chunks are fixed, so those sentences (and the
tail of a shortened chunk) are not used by that example in that epoch. Every epoch draws
anew, so over epochs all text is seen; in exchange any example is a pure function of
(seed, epoch, example index), which makes resume and host slicing exact.

All segments are [start, start + length) token ranges inside documents, because a document's
sentences are stored back to back.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data_pipeline import randomness as rnd

PAIR_MODES = ("nsp", "sop", "none")


@dataclasses.dataclass(frozen=True)
class DocumentIndex:
  """Sentence layout of a split: D documents, S sentences in document order."""
  doc_num_sents: np.ndarray   # int64[D]
  doc_first_sent: np.ndarray  # int64[D], index into the sentence arrays
  sent_lengths: np.ndarray    # int64[S]
  sent_tok_start: np.ndarray  # int64[S], token offset of the sentence in its document

  @classmethod
  def from_counts(cls, sentence_counts: np.ndarray, sentence_lengths: np.ndarray):
    counts = np.asarray(sentence_counts, dtype=np.int64)
    lengths = np.asarray(sentence_lengths, dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    global_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    doc_of_sent = np.repeat(np.arange(len(counts)), counts)
    doc_tok_start = global_start[np.minimum(first, max(len(lengths) - 1, 0))] if len(
        lengths) else np.zeros(len(counts), np.int64)
    tok_start = global_start - doc_tok_start[doc_of_sent] if len(lengths) else global_start
    return cls(counts, first, lengths, tok_start)

  @property
  def num_documents(self) -> int:
    return len(self.doc_num_sents)


@dataclasses.dataclass(frozen=True)
class Chunks:
  doc: np.ndarray         # int64[N] document of each chunk
  first_sent: np.ndarray  # int64[N] global index of its first sentence
  num_sents: np.ndarray   # int64[N]

  def __len__(self) -> int:
    return len(self.doc)


def build_chunks(index: DocumentIndex, max_num_tokens: int) -> Chunks:
  """Sentences whose start offset shares a `max_num_tokens` window form one chunk."""
  doc_of_sent = np.repeat(np.arange(index.num_documents), index.doc_num_sents)
  window = index.sent_tok_start // max_num_tokens
  change = np.ones(len(doc_of_sent), dtype=bool)
  change[1:] = (doc_of_sent[1:] != doc_of_sent[:-1]) | (window[1:] != window[:-1])
  first = np.flatnonzero(change)
  num = np.diff(np.concatenate([first, [len(doc_of_sent)]]))
  return Chunks(doc_of_sent[first], first.astype(np.int64), num.astype(np.int64))


@dataclasses.dataclass(frozen=True)
class PairPlan:
  """Per example: segment token ranges inside documents, the label, and the short flag."""
  doc_a: np.ndarray
  a_start: np.ndarray
  a_len: np.ndarray
  doc_b: np.ndarray
  b_start: np.ndarray
  b_len: np.ndarray
  label: np.ndarray     # int32: NSP 1 = random B; SOP 1 = swapped; none: 0
  is_short: np.ndarray  # bool: the short-target draw fired


def _gather_run(index: DocumentIndex, first: np.ndarray, avail: np.ndarray, width: int):
  """Cumulative lengths of up to `width` sentences from `first` ([n, width], 0-padded)."""
  cols = np.arange(max(width, 1))
  valid = cols[None, :] < avail[:, None]
  sidx = np.where(valid, first[:, None] + cols[None, :], 0)
  lens = np.where(valid, index.sent_lengths[sidx], 0)
  return np.cumsum(lens, axis=1)


def _truncate_pair(la, lb, max_num_tokens):
  """Final lengths after BERT's truncate_seq_pair (longer side first; ties trim B)."""
  excess = np.maximum(la + lb - max_num_tokens, 0)
  lo = np.minimum(la, lb)
  d = np.abs(la - lb)
  one_sided = d >= excess
  new_a = np.where(one_sided, np.where(la > lb, la - excess, la), lo - (excess - d) // 2)
  new_b = np.where(one_sided, np.where(la > lb, lb, lb - excess), lo - (excess - d + 1) // 2)
  return new_a, new_b


def plan_pairs(index: DocumentIndex, chunks: Chunks, chunk_ids: np.ndarray, seed: int,
               epoch: int, max_seq_length: int, short_seq_prob: float,
               pair_mode: str) -> PairPlan:
  """Plans the examples whose identities are `chunk_ids` (int64[n]) for `epoch`."""
  if pair_mode not in PAIR_MODES:
    raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
  chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
  n = len(chunk_ids)
  rows = np.arange(n)
  max_num_tokens = max_seq_length - (2 if pair_mode == "none" else 3)
  u = lambda stream: rnd.uniform(seed, epoch, stream, chunk_ids)

  cdoc = chunks.doc[chunk_ids]
  cfirst = chunks.first_sent[chunk_ids]
  cn = chunks.num_sents[chunk_ids]
  is_short = u(rnd.SHORT_SEQ) < short_seq_prob
  target = np.where(is_short, rnd.randint(2, max_num_tokens, u(rnd.SHORT_LEN)), max_num_tokens)
  cum = _gather_run(index, cfirst, cn, int(cn.max(initial=1)))
  # BERT closes the chunk at the first sentence that reaches the target.
  k = np.minimum(cn, (cum < target[:, None]).sum(axis=1) + 1)
  total = cum[rows, k - 1]
  start = index.sent_tok_start[cfirst]
  zeros = np.zeros(n, np.int64)

  if pair_mode == "none":
    la, lb = total, zeros
    a_start, doc_b, b_start, label = start, cdoc, zeros, zeros
    new_a = np.minimum(la, max_num_tokens)
    new_b = zeros
  else:
    a_end = np.where(k >= 2, rnd.randint(1, np.maximum(k - 1, 1), u(rnd.A_END)), 1)
    la = cum[rows, a_end - 1]
    if pair_mode == "sop":
      # A lone sentence is cut in the middle so that both segments exist.
      la = np.where(k == 1, np.maximum(total // 2, 1), la)
      lb = total - la
      swap = u(rnd.IS_RANDOM_NEXT) < 0.5
      a_start = np.where(swap, start + la, start)
      b_start = np.where(swap, start, start + la)
      la, lb = np.where(swap, lb, la), np.where(swap, la, lb)
      doc_b, label = cdoc, swap.astype(np.int64)
    else:
      is_random = (k == 1) | (u(rnd.IS_RANDOM_NEXT) < 0.5)
      num_docs = index.num_documents
      other = rnd.randint(0, num_docs - 2, u(rnd.RANDOM_DOC))
      other = other + (other >= cdoc)  # Uniform over documents other than this one.
      rstart = rnd.randint(0, index.doc_num_sents[other] - 1, u(rnd.RANDOM_START))
      avail = index.doc_num_sents[other] - rstart
      rfirst = index.doc_first_sent[other] + rstart
      # Each sentence has >= 1 token, so max_num_tokens sentences always reach the target.
      cum_b = _gather_run(index, rfirst, np.minimum(avail, max_num_tokens),
                          int(min(avail.max(initial=1), max_num_tokens)))
      target_b = target - la
      j = np.minimum(np.minimum(avail, max_num_tokens) - 1,
                     (cum_b < target_b[:, None]).sum(axis=1))
      random_len = cum_b[rows, j]
      a_start = start
      doc_b = np.where(is_random, other, cdoc)
      b_start = np.where(is_random, index.sent_tok_start[rfirst], start + la)
      lb = np.where(is_random, random_len, total - la)
      label = is_random.astype(np.int64)
    new_a, new_b = _truncate_pair(la, lb, max_num_tokens)

  # The front share of the removed tokens, for A and B with independent bits.
  front_a = rnd.binomial_half(la - new_a, seed, epoch, rnd.TRUNCATE, chunk_ids * 2)
  front_b = rnd.binomial_half(lb - new_b, seed, epoch, rnd.TRUNCATE, chunk_ids * 2 + 1)
  return PairPlan(cdoc, a_start + front_a, new_a, doc_b, b_start + front_b, new_b,
                  label.astype(np.int32), is_short)


def assemble(plan: PairPlan, tokens: np.ndarray, doc_base: dict | np.ndarray,
             max_seq_length: int, cls_id: int, sep_id: int, pad_id: int,
             two_segments: bool = True):
  """[CLS] A [SEP] B [SEP] [PAD]... as int32 [n, L] input_ids, token_type_ids, attention_mask.

  `tokens` holds the needed documents back to back; `doc_base(doc)` (an array indexed by
  document id) gives each document's offset in it.
  """
  pos = np.arange(max_seq_length)[None, :]
  la = plan.a_len[:, None]
  lb = plan.b_len[:, None]
  ga = (doc_base[plan.doc_a] + plan.a_start)[:, None]
  gb = (doc_base[plan.doc_b] + plan.b_start)[:, None]
  in_a = (pos >= 1) & (pos <= la)
  in_b = (pos >= la + 2) & (pos < la + 2 + lb)
  src = np.where(in_a, ga + pos - 1, np.where(in_b, gb + pos - la - 2, 0))
  ids = np.where(in_a | in_b, tokens[src], pad_id)
  ids[:, 0] = cls_id
  length = la + (lb + 3 if two_segments else 2)
  sep = (pos == la + 1) | ((pos == la + lb + 2) if two_segments else False)
  ids = np.where(sep, sep_id, ids)
  token_type = (in_b | (two_segments & (pos == la + lb + 2))).astype(np.int32)
  attention = (pos < length).astype(np.int32)
  return ids.astype(np.int32), token_type, attention
