"""Sentence-pair statistics, one definition for google-research/bert's output and ours.

An instance is described by its segments as token coordinates (a document's sentences are
numbered back to back, as in records.py): A and B before `truncate_seq_pair` (a0, la0, b0,
lb0) and after (a, la, b, lb), B's document and the label. The recorded reference values in
tests/data/nsp_reference_stats.json were computed with `statistics` from the instances that
google-research/bert's `create_instances_from_document` made (tests/data/README.md says how);
the test computes the same statistics from ours.
"""
from __future__ import annotations

import numpy as np

FIELDS = ("pass_", "doc_a", "doc_b", "a0", "la0", "b0", "lb0", "a", "la", "b", "lb",
          "is_random")


def read_bert_documents(path: str, tokenize) -> list[list[int]]:
  """Sentence token counts per document of a file in BERT's text format, read as
  `create_training_instances` reads it: stripped lines, a blank line starts a document,
  lines without tokens are dropped, so are empty documents."""
  documents = [[]]
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line:
        documents.append([])
      tokens = tokenize(line)
      if tokens:
        documents[-1].append(len(tokens))
  return [d for d in documents if d]


BATCHES = 20  # Standard errors from batch means over passes: instances of one pass are
# not independent (the put-back, and BERT's short target drawn per document, tie them).


def _summary(values, passes, num_passes: int) -> dict:
  """Mean over instances, and its standard error from the means of BATCHES groups of
  consecutive passes."""
  values = np.asarray(values, dtype=np.float64)
  group = np.asarray(passes) * BATCHES // num_passes
  sums = np.bincount(group, weights=values, minlength=BATCHES)
  counts = np.bincount(group, minlength=BATCHES)
  batch_means = sums[counts > 0] / counts[counts > 0]
  stderr = float(batch_means.std(ddof=1) / np.sqrt(len(batch_means)))
  return {"mean": float(values.mean()), "stderr": stderr, "n": int(len(values))}


def statistics(rec: dict, sentence_counts: list[list[int]], num_passes: int,
               max_num_tokens: int) -> dict:
  """{name: {mean, stderr, n}} over the instances `rec` (arrays named as in FIELDS)."""
  lengths = np.concatenate([np.asarray(d) for d in sentence_counts])
  bounds = np.concatenate([[0], np.cumsum(lengths)])
  sentence_of = lambda coord: np.searchsorted(bounds, coord, side="right") - 1
  a_sents = sentence_of(rec["a"] + rec["la"] - 1) - sentence_of(rec["a"]) + 1
  b_sents = sentence_of(rec["b"] + rec["lb"] - 1) - sentence_of(rec["b"]) + 1
  total = rec["la"] + rec["lb"]
  removed = rec["la0"] + rec["lb0"] - total
  cut = removed > 0
  both_cut = (rec["la"] < rec["la0"]) & (rec["lb"] < rec["lb0"])
  front = (rec["a"] - rec["a0"]) + (rec["b"] - rec["b0"])
  random = rec["is_random"].astype(bool)
  per_pass = np.bincount(rec["pass_"], minlength=num_passes)
  per_doc = np.bincount(rec["pass_"] * len(sentence_counts) + rec["doc_a"],
                        minlength=num_passes * len(sentence_counts))
  one_sentence_doc = np.array([len(d) == 1 for d in sentence_counts])[rec["doc_a"]]
  pass_of_doc = np.repeat(np.arange(num_passes), len(sentence_counts))
  per_pass_stats = {
      "instances_per_pass": (per_pass, np.arange(num_passes)),
      "document_gives_one_instance": (per_doc == 1, pass_of_doc),
      "instances_per_document": (per_doc, pass_of_doc),
  }
  every = np.ones(len(total), dtype=bool)
  stats = {  # name: (per-instance values, which instances count)
      "is_random_next": (random, every),
      "random_next_from_same_document": (rec["doc_b"] == rec["doc_a"], random),
      "random_next_in_one_sentence_documents": (random, one_sentence_doc),
      "a_one_sentence": (a_sents == 1, every),
      "b_one_sentence": (b_sents == 1, every),
      "a_sentences": (a_sents, every),
      "b_sentences": (b_sents, every),
      "b_sentences_when_random": (b_sents, random),
      "b_sentences_when_next": (b_sents, ~random),
      "a_tokens": (rec["la"], every),
      "b_tokens": (rec["lb"], every),
      "tokens": (total, every),
      "tokens_full": (total == max_num_tokens, every),
      "tokens_at_most_quarter": (total <= max_num_tokens // 4, every),
      "tokens_at_most_half": (total <= max_num_tokens // 2, every),
      "tokens_at_most_three_quarters": (total <= 3 * max_num_tokens // 4, every),
      "truncated": (cut, every),
      "tokens_removed": (removed, every),
      "removed_share_from_a": ((rec["la0"] - rec["la"]) / np.maximum(removed, 1), cut),
      "removed_share_from_front": (front / np.maximum(removed, 1), cut),
      "both_cut_b_longer": (rec["lb"] > rec["la"], both_cut),
  }
  out = {name: _summary(v, p, num_passes) for name, (v, p) in per_pass_stats.items()}
  for name, (values, where) in stats.items():
    out[name] = _summary(values[where], rec["pass_"][where], num_passes)
  return out


def differences(reference: dict, ours: dict, max_z: float) -> list[str]:
  """The statistics whose means differ by more than `max_z` combined standard errors (or
  at all, where neither side varies)."""
  found = []
  for name, ref in reference.items():
    got = ours[name]
    stderr = np.hypot(ref["stderr"], got["stderr"])
    gap = abs(got["mean"] - ref["mean"])
    if gap > max(max_z * stderr, 1e-12):
      found.append(f"{name}: reference {ref['mean']:.4f} ours {got['mean']:.4f} "
                   f"({gap / stderr if stderr else float('inf'):.1f} standard errors)")
  return found


def our_records(sentence_counts: list[list[int]], seed: int, passes: int,
                max_seq_length: int, short_seq_prob: float) -> dict:
  """Our NSP instances over `passes` epochs (an epoch plays the part of one of BERT's
  dupe_factor passes), as the arrays `statistics` reads."""
  from data_pipeline import instances
  index = instances.DocumentIndex.from_counts([len(d) for d in sentence_counts],
                                              np.concatenate(sentence_counts))
  parts = []
  for epoch in range(passes):
    starts = instances.epoch_examples(index, seed, epoch, max_seq_length, short_seq_prob, "nsp")
    args = (index, starts, seed, epoch, max_seq_length, short_seq_prob, "nsp")
    before, after = instances.untruncated_pairs(*args), instances.plan_pairs(*args)
    parts.append({
        "pass_": np.full(len(starts), epoch), "doc_a": after.doc_a, "doc_b": after.doc_b,
        "a0": before.a_start, "la0": before.a_len, "b0": before.b_start, "lb0": before.b_len,
        "a": after.a_start, "la": after.a_len, "b": after.b_start, "lb": after.b_len,
        "is_random": after.label})
  return {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}
