"""Fine-tuning files: readers, label sets, encoding into the batch contract, bad input."""
import json

import numpy as np
import pytest

from data_pipeline.finetune import readers as fd
from data_pipeline.text.tokenizer import load_tokenizer

WORDS = ["the", "cat", "sat", "on", "mat", "john", "lives", "in", "paris", "##ian", "good", "bad"]


@pytest.fixture()
def tokenizer(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
  return load_tokenizer(str(vocab))


def _ids(tok, text):
  return tok.encode(text)


def test_csv_tsv_jsonl_read_the_same(tmp_path):
  (tmp_path / "a.csv").write_text('sentence,other,label\n"the cat, sat",x,pos\nbad,y,neg\n')
  (tmp_path / "a.tsv").write_text('sentence\tother\tlabel\nthe cat, sat\tx\tpos\nbad\ty\tneg\n')
  with open(tmp_path / "a.jsonl", "w") as f:
    f.write(json.dumps({"sentence": "the cat, sat", "label": "pos"}) + "\n\n")
    f.write(json.dumps({"sentence": "bad", "label": "neg"}) + "\n")
  for name, lines in (("a.csv", [2, 3]), ("a.tsv", [2, 3]), ("a.jsonl", [1, 3])):
    ex = fd.read_text_examples(str(tmp_path / name), task="classification")
    assert [(e.text, e.label, e.line) for e in ex] == [("the cat, sat", "pos", lines[0]),
                                                        ("bad", "neg", lines[1])]


def test_label_sets():
  assert fd.infer_label_list(["1", "0", "10", "2"]) == ["0", "1", "2", "10"]
  assert fd.infer_label_list(["pos", "neg"]) == ["neg", "pos"]
  assert fd.infer_label_list(["B-PER", "I-PER", "B-LOC"], ner=True) == [
      "O", "B-LOC", "B-PER", "I-PER"]


def test_encode_pairs_and_labels(tmp_path, tokenizer):
  (tmp_path / "p.tsv").write_text("a\tb\ty\nthe cat sat\tjohn lives in paris\t1\ngood\tbad\t0\n")
  ex = fd.read_text_examples(str(tmp_path / "p.tsv"), task="classification", text_column="a",
                             text_pair_column="b", label_column="y")
  arr = fd.encode_text_examples(ex, tokenizer, 16, task="classification",
                                label_list=["0", "1"])
  t = tokenizer
  row = [t.cls_id] + _ids(t, "the cat sat") + [t.sep_id] + _ids(t, "john lives in paris") + [
      t.sep_id]
  assert arr["input_ids"][0, :len(row)].tolist() == row
  assert arr["input_ids"][0, len(row):].tolist() == [0] * (16 - len(row))
  assert arr["token_type_ids"][0].tolist() == [0] * 5 + [1] * 5 + [0] * 6
  assert arr["attention_mask"][0].sum() == len(row)
  assert arr["labels"].tolist() == [1, 0] and arr["labels"].dtype == np.int32
  assert all(v.dtype == np.int32 for v in arr.values())
  # Longest-first truncation: 8 tokens = [CLS] 3 [SEP] 2 [SEP] from a 3+4 pair.
  short = fd.encode_text_examples(ex[:1], tokenizer, 8, task="classification",
                                  label_list=["0", "1"])
  assert short["input_ids"][0].tolist() == [t.cls_id] + _ids(t, "the cat sat") + [
      t.sep_id] + _ids(t, "john lives") + [t.sep_id]
  reg = fd.read_text_examples(str(tmp_path / "p.tsv"), task="regression", text_column="a",
                              label_column="y")
  out = fd.encode_text_examples(reg, tokenizer, 8, task="regression")
  assert out["labels"].dtype == np.float32 and out["labels"].tolist() == [1.0, 0.0]


def test_conll_and_first_subtoken_labels(tmp_path, tokenizer):
  (tmp_path / "ner.conll").write_text(
      "-DOCSTART- -X- O O\n\njohn NNP B-PER\nlives VBZ O\nin IN O\nparisian JJ B-MISC\n\n"
      "the DT O\ncat NN O\n")
  sents = fd.read_tagged_sentences(str(tmp_path / "ner.conll"))
  assert [s.tokens for s in sents] == [("john", "lives", "in", "parisian"), ("the", "cat")]
  assert sents[0].tags == ("B-PER", "O", "O", "B-MISC") and sents[0].line == 3
  labels = fd.infer_label_list([t for s in sents for t in s.tags], ner=True)
  enc = fd.encode_tagged_sentences(sents, tokenizer, 10, label_list=labels)
  t = tokenizer
  ids = enc.arrays["input_ids"][0].tolist()
  # parisian -> paris ##ian: the tag sits on 'paris' only.
  assert ids[:7] == [t.cls_id] + _ids(t, "john lives in paris") + _ids(t, "parisian")[1:] + [
      t.sep_id]
  ignore = fd.IGNORE_INDEX
  li = labels.index
  assert enc.arrays["labels"][0].tolist() == [ignore, li("B-PER"), li("O"), li("O"),
                                              li("B-MISC"), ignore] + [ignore] * 4
  assert enc.word_positions[0].tolist() == [1, 2, 3, 4]
  # Truncation drops whole words and counts them.
  small = fd.encode_tagged_sentences(sents, tokenizer, 5, label_list=labels)
  assert small.word_positions[0].tolist() == [1, 2, 3] and small.num_truncated_words == 1
  # Unlabelled input: tokens only.
  (tmp_path / "plain.conll").write_text("john\nlives\n\ncat\n")
  plain = fd.read_tagged_sentences(str(tmp_path / "plain.conll"), labelled=False)
  assert plain[0].tags is None
  assert "labels" not in fd.encode_tagged_sentences(plain, tokenizer, 8).arrays


@pytest.mark.parametrize("name,content,kwargs,message", [
    ("e.csv", "", {}, r"e\.csv:1: empty file"),
    ("h.csv", "sentence,label\n", {}, r"h\.csv:1: no examples"),
    ("m.csv", "text,label\ngood,pos\n", {}, r"m\.csv:2: no column 'sentence'"),
    ("n.tsv", "sentence\tlabel\ngood\tpos\nbad\n", {}, r"n\.tsv:3: 1 fields, but the header"),
    ("r.jsonl", '{"sentence": "good", "label": "x"}\n', {"task": "regression"},
     r"r\.jsonl:1: label 'x' is not a number"),
    ("j.jsonl", '{"sentence": "good", "label": 1}\n{bad json\n', {}, r"j\.jsonl:2: invalid JSON"),
    ("l.csv", "sentence,label\ngood,\n", {}, r"l\.csv:2: empty label"),
])
def test_bad_text_files(tmp_path, name, content, kwargs, message):
  (tmp_path / name).write_text(content)
  with pytest.raises(fd.DataError, match=message):
    fd.read_text_examples(str(tmp_path / name), **{"task": "classification", **kwargs})


def test_bad_labels_and_tags(tmp_path):
  (tmp_path / "eval.csv").write_text("sentence,label\ngood,pos\nbad,maybe\n")
  ex = fd.read_text_examples(str(tmp_path / "eval.csv"), task="classification")
  with pytest.raises(fd.DataError, match=r"eval\.csv:3: label 'maybe' is not in the label set"):
    fd.check_labels(str(tmp_path / "eval.csv"), ex, ["neg", "pos"])
  (tmp_path / "t.conll").write_text("john B-PER\n\nthe O\ncat B-ANIMAL\n")
  sents = fd.read_tagged_sentences(str(tmp_path / "t.conll"))
  with pytest.raises(fd.DataError, match=r"t\.conll:4: tag 'B-ANIMAL' is not in the label set"):
    fd.check_labels(str(tmp_path / "t.conll"), sents, ["O", "B-PER"])
  (tmp_path / "u.conll").write_text("john B-PER\nlives\n")
  with pytest.raises(fd.DataError, match=r"u\.conll:2: token 'lives' has no tag"):
    fd.read_tagged_sentences(str(tmp_path / "u.conll"))
  (tmp_path / "v.jsonl").write_text('{"tokens": ["a", "b"], "tags": ["O"]}\n')
  with pytest.raises(fd.DataError, match=r"v\.jsonl:1: 2 tokens but 1 tags"):
    fd.read_tagged_sentences(str(tmp_path / "v.jsonl"))
  (tmp_path / "w.conll").write_text("\n\n")
  with pytest.raises(fd.DataError, match=r"w\.conll:1: no sentences \(empty file\)"):
    fd.read_tagged_sentences(str(tmp_path / "w.conll"))
  with pytest.raises(fd.DataError, match="file not found"):
    fd.read_tagged_sentences(str(tmp_path / "missing.conll"))
