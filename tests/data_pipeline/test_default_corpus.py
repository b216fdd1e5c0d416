"""The default corpus and the quickstart dataset, on a tiny stand-in standard library."""
import os

import pytest

from data_pipeline import corpus
from data_pipeline.default_corpus import write_default_corpus
from data_pipeline.loader import LoaderConfig, make_pretraining_iterator, read_manifest
from data_pipeline.quickstart import prepare_default_dataset

_MODULE = '''"""Tools for reading configuration files. The reader accepts several formats.

Values are parsed lazily. Errors name the file and the line where they occur.
"""
# The cache below keeps parsed files. It is cleared when a file changes on disk.
# Nothing else holds a reference to it.
CACHE = {}


def read(path):
  """Read the file at path and return its sections. Missing files raise an error."""
  return {}
'''


@pytest.fixture(scope="module")
def fake_stdlib(tmp_path_factory):
  root = tmp_path_factory.mktemp("stdlib")
  for i in range(40):
    text = _MODULE.replace("configuration", f"configuration number {i}")
    (root / f"mod{i:02d}.py").write_text(text)
  os.makedirs(root / "test")
  (root / "test" / "test_x.py").write_text('"""Tests are skipped. They are not prose."""\n')
  return str(root)


def test_default_corpus_is_deterministic_bert_format(tmp_path, fake_stdlib):
  a = write_default_corpus(str(tmp_path / "a"), stdlib_dir=fake_stdlib)
  b = write_default_corpus(str(tmp_path / "b"), stdlib_dir=fake_stdlib)
  assert [open(x).read() for x in a] == [open(y).read() for y in b]
  docs = list(corpus.iter_text_documents(a))
  assert len(docs) == 40
  first = sorted(docs, key=lambda d: d.source)[0].sentences
  assert "Values are parsed lazily." in first
  assert "It is cleared when a file changes on disk." in first
  assert all("Tests are skipped" not in s for d in docs for s in d.sentences)


def test_real_standard_library_gives_english_text(tmp_path):
  from data_pipeline.default_corpus import _file_sentences
  import sysconfig
  sentences = _file_sentences(os.path.join(sysconfig.get_paths()["stdlib"], "argparse.py"))
  assert len(sentences) > 50 and any("argument" in s for s in sentences)


def test_quickstart_dataset_is_ready_and_reused(tmp_path, fake_stdlib, monkeypatch):
  import data_pipeline.quickstart as quickstart
  real = quickstart.write_default_corpus
  monkeypatch.setattr(quickstart, "write_default_corpus",
                      lambda out: real(out, stdlib_dir=fake_stdlib))
  data_dir = prepare_default_dataset(str(tmp_path), vocab_size=90, eval_fraction=0.2,
                                     num_workers=0, progress=False)
  manifest = read_manifest(data_dir)
  assert manifest["vocab_size"] == 90 and manifest["splits"]["eval"]["documents"] > 0
  batch = next(make_pretraining_iterator(LoaderConfig(data_dir, global_batch_size=4,
                                                      max_seq_length=32)))
  assert batch["input_ids"].shape == (4, 32)
  stamp = os.path.getmtime(os.path.join(data_dir, "manifest.json"))
  assert prepare_default_dataset(str(tmp_path), vocab_size=90, eval_fraction=0.2,
                                 progress=False) == data_dir
  assert os.path.getmtime(os.path.join(data_dir, "manifest.json")) == stamp
