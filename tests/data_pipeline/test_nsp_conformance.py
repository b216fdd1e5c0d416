"""Sentence pairs against google-research/bert's `create_instances_from_document`, run on
real public text (tests/data/README.md: Alice's Adventures in Wonderland chapters I-II and
Lu Xun's 狂人日记, one paragraph per document, BERT's text format).

The reference ran outside the project, 200 dupe_factor passes per configuration; what it
made is recorded as statistics in tests/data/nsp_reference_stats.json (how: its
`produced_by`). Here our planner runs 200 epochs (an epoch is one of BERT's passes: we draw
pairs anew each epoch instead of writing dupe_factor static copies) on the same documents,
tokenized the same way, and every statistic must agree within 5 standard errors (batch
means over passes, both sides). On these samples the bound catches each of: no
short_seq_prob, a random next from the same document, no put-back of the unused sentences,
A cut first on ties in truncate_seq_pair (measured by running mutated copies of the
planner: each moves at least one statistic past 5 standard errors; see docs/data.md).

One difference by design: BERT draws the short target once per *document* (all of a short
document's chunks are short); ours draws it per chunk, so short_seq_prob is the share of
short sequences whatever the documents' lengths. On these samples that shifts a few
statistics by 3-4.4 standard errors (BERT makes ~1% more instances, a little shorter, more
often one-sentence segments); a per-document draw brings all of them under 3.
"""
import json
import os

import numpy as np
import pytest
from tokenizers import normalizers, pre_tokenizers

from data_pipeline import instances
from tests.helpers import DATA, nsp_stats

MAX_Z = 5.0

with open(os.path.join(DATA, "nsp_reference_stats.json"), encoding="utf-8") as _f:
  REFERENCE = json.load(_f)


def _basic_tokenize():
  """BERT's BasicTokenizer (lower case, punctuation and CJK characters split), as the
  tokenizers library implements it."""
  norm = normalizers.BertNormalizer(lowercase=True)
  pre = pre_tokenizers.BertPreTokenizer()
  return lambda line: [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(line))]


@pytest.mark.parametrize("config", sorted(REFERENCE["configs"]))
def test_pair_statistics_match_google_research_bert(config):
  ref = REFERENCE["configs"][config]
  docs = nsp_stats.read_bert_documents(os.path.join(DATA, ref["file"]), _basic_tokenize())
  assert docs == REFERENCE["documents"][ref["file"]]  # the reference's very documents
  assert any(len(d) == 1 for d in docs) and max(len(d) for d in docs) >= 8
  passes, max_seq_length = ref["dupe_factor"], ref["max_seq_length"]
  rec = nsp_stats.our_records(docs, 0, passes, max_seq_length, ref["short_seq_prob"])
  ours = nsp_stats.statistics(rec, docs, passes, max_seq_length - 3)
  assert set(ours) == set(ref["statistics"])
  assert nsp_stats.differences(ref["statistics"], ours, MAX_Z) == []
  # The comparison can tell: without short sequences ours is far from the reference.
  rec = nsp_stats.our_records(docs, 0, passes, max_seq_length, 0.0)
  without_short = nsp_stats.statistics(rec, docs, passes, max_seq_length - 3)
  assert len(nsp_stats.differences(ref["statistics"], without_short, MAX_Z)) >= 5


def test_truncation_equals_truncate_seq_pair_on_every_pair_of_lengths():
  """B is cut on ties, as in the reference (`tokens_a if len(a) > len(b) else tokens_b`);
  ours cut A until this test."""
  facts = REFERENCE["truncate_seq_pair"]
  expected_a = np.array(facts["final_a_tokens"])
  la, lb = np.meshgrid(np.arange(1, 41), np.arange(1, 41), indexing="ij")
  a, b = instances._truncate_pair(la, lb, facts["max_num_tokens"])
  np.testing.assert_array_equal(a, expected_a)
  np.testing.assert_array_equal(b, np.minimum(la + lb, facts["max_num_tokens"]) - expected_a)
