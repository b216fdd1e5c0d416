"""Corpora (local layouts, gzip, bad input, TFDS without tensorflow) and prepare."""
import gzip
import json
import os
import subprocess
import sys

import pytest
from tests.helpers.data import write_synthetic_corpus, write_vocab

from data_pipeline import corpus, prepare as prepare_lib


def test_layouts_gzip_and_sentence_splitting(tmp_path):
  (tmp_path / "a.txt").write_text("One here.\nTwo here.\n\n\nThree.\n")
  with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
    f.write("Dr. Who went out. Then it rained! Did it stop? \"Yes.\" It did.\n")
  docs = list(corpus.iter_text_documents(str(tmp_path / "a.txt")))
  assert [d.sentences for d in docs] == [["One here.", "Two here."], ["Three."]]
  assert docs[1].source.endswith("a.txt:5")
  lines = list(corpus.iter_text_documents(str(tmp_path / "*.gz"), "lines"))
  assert lines[0].sentences == ["Dr.", "Who went out.", "Then it rained!", "Did it stop?",
                                "\"Yes.\"", "It did."]
  paragraphs = list(corpus.iter_text_documents(str(tmp_path / "a.txt"), "paragraphs"))
  assert [d.sentences for d in paragraphs] == [["One here.", "Two here."], ["Three."]]


def test_bad_inputs_are_named_or_counted(tmp_path):
  (tmp_path / "empty.txt").write_text("")
  (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02abc\n")
  (tmp_path / "mixed.txt").write_bytes(b"Good line.\n\xff\xfe bad\nAnother good one.\n")
  (tmp_path / "noblank.txt").write_text("A.\nB.\nC.\n")
  skips = corpus.SkipLog()
  docs = list(corpus.iter_text_documents(str(tmp_path / "*.txt"), "bert", skips))
  counts = {k: v["count"] for k, v in skips.to_json().items()}
  assert counts["empty_file"] == 1 and counts["binary_file"] == 1
  assert counts["invalid_utf8_line"] == 1
  assert skips.examples["invalid_utf8_line"][0].endswith("mixed.txt:2")
  assert counts["note_bert_format_file_without_blank_lines_read_as_one_document"] == 2
  assert sorted(len(d.sentences) for d in docs) == [2, 3]
  with pytest.raises(corpus.CorpusError, match="no files match: .*missing"):
    list(corpus.iter_text_documents(str(tmp_path / "missing*.txt")))


def _prepare(root, corpus_path, out, **kw):
  vocab = write_vocab(os.path.join(root, "vocab.txt"))
  return prepare_lib.prepare(out, vocab, inputs=corpus_path, options=prepare_lib.PrepareOptions(
      eval_fraction=0.2, docs_per_shard=8, progress=False, **kw))


def test_manifest_resume_and_workers(tmp_path):
  corpus_path = write_synthetic_corpus(str(tmp_path / "c.txt"), num_docs=40)
  out = str(tmp_path / "d")
  m = _prepare(str(tmp_path), corpus_path, out)
  assert m["input_documents"] == 40
  assert m["splits"]["train"]["documents"] + m["splits"]["eval"]["documents"] == 40
  assert m["splits"]["eval"]["documents"] > 0
  assert m["vocab_size"] == 2405 and m["pad_id"] == 0 and m["tokenizer"]["kind"] == "wordpiece"
  assert m["skipped"]["note_one_sentence_document"]["count"] == 2
  assert 0 < m["splits"]["eval"]["unigram_baseline_accuracy"] < 0.2
  assert prepare_lib.unigram_baseline_accuracy(out, "train") == (
      m["splits"]["train"]["unigram_baseline_accuracy"])
  # Resume: drop the manifest and one finished unit; only that unit is tokenized again.
  os.remove(os.path.join(out, "manifest.json"))
  os.remove(os.path.join(out, "unit-00002.json"))
  kept = os.path.getmtime(os.path.join(out, "train-00000.array_record"))
  m2 = _prepare(str(tmp_path), corpus_path, out)
  assert os.path.getmtime(os.path.join(out, "train-00000.array_record")) == kept
  assert m2["splits"] == m["splits"]
  # Worker processes produce identical shards.
  out3 = str(tmp_path / "d3")
  m3 = _prepare(str(tmp_path), corpus_path, out3, num_workers=2)
  assert m3["splits"] == m["splits"]
  for shard in m["splits"]["train"]["shards"]:
    with open(os.path.join(out, shard), "rb") as a, open(os.path.join(out3, shard), "rb") as b:
      assert a.read() == b.read()
  # Different settings into the same directory are refused.
  with pytest.raises(prepare_lib.PrepareError, match="different settings"):
    _prepare(str(tmp_path), corpus_path, out, max_sentence_tokens=5)


def test_long_sentences_are_split_and_counted(tmp_path):
  corpus_path = tmp_path / "c.txt"
  corpus_path.write_text(" ".join(f"t{5 + i % 30}" for i in range(50)) + "\nt5 t6\n\nt7 t8\nt9\n")
  m = _prepare(str(tmp_path), str(corpus_path), str(tmp_path / "d"), max_sentence_tokens=16)
  assert m["skipped"]["note_long_sentence_split"]["count"] == 1
  total = m["splits"]["train"]["sentences"] + m["splits"]["eval"]["sentences"]
  assert total == 4 + 1 + 2  # 50 tokens -> 4 pieces of <= 16.


def test_tfds_builder_and_reader_without_tensorflow(tmp_path):
  """Local text -> TFDS array_record -> prepare, in a process that checks TF stays absent."""
  corpus_path = write_synthetic_corpus(str(tmp_path / "c.txt"), num_docs=12)
  vocab = write_vocab(str(tmp_path / "vocab.txt"))
  code = f"""
import importlib.util, json, sys
assert importlib.util.find_spec("tensorflow") is None, "tensorflow is installed"
from data_pipeline.tfds_builder import build_local_tfds
from data_pipeline.prepare import PrepareOptions, prepare
spec, skips = build_local_tfds({corpus_path!r}, {str(tmp_path / "tfds")!r})
m = prepare({str(tmp_path / "d")!r}, {vocab!r}, tfds_name=spec, options=PrepareOptions(
            tfds_data_dir={str(tmp_path / "tfds")!r}, eval_fraction=0.0, progress=False))
assert "tensorflow" not in sys.modules and "jax" not in sys.modules
print(json.dumps(m["splits"]["train"]["sentences"]))
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180)
  assert result.returncode == 0, result.stderr[-3000:]
  local = prepare_lib.prepare(str(tmp_path / "d_local"), vocab, inputs=corpus_path,
                              options=prepare_lib.PrepareOptions(eval_fraction=0.0,
                                                                 progress=False))
  assert json.loads(result.stdout.strip().splitlines()[-1]) == local["splits"]["train"]["sentences"]
  with pytest.raises(corpus.CorpusError, match="not available"):
    list(corpus.iter_tfds_documents("no_such_dataset:text", str(tmp_path / "tfds")))
