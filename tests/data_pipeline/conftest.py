"""Shared tiny datasets for the data_pipeline tests (helpers live in tests/helpers/data.py)."""
import os

import pytest
from tests.helpers.data import write_synthetic_corpus, write_vocab

from data_pipeline import prepare as prepare_lib


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic")
  vocab = write_vocab(os.path.join(root, "vocab.txt"))
  corpus = write_synthetic_corpus(os.path.join(root, "corpus.txt"))
  data_dir = os.path.join(root, "data")
  prepare_lib.prepare(data_dir, vocab, inputs=corpus, options=prepare_lib.PrepareOptions(
      eval_fraction=0.2, docs_per_shard=16, progress=False))
  return data_dir
