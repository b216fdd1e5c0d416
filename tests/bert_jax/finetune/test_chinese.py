"""Fine-tuning on Chinese: sentence classification, and NER in the character-per-line BIO
format of MSRA / People's Daily (one character and its tag per line, a blank line between
sentences), with a tiny random checkpoint whose vocabulary is laid out like
bert-base-chinese (every CJK character a whole token)."""
import os

import jax
import numpy as np
import pytest

from bert_jax.finetune import loop as finetune
from bert_jax import interop
from bert_jax import model as model_lib
from data_pipeline.finetune import readers as fd
from data_pipeline.text import tokenizer as tokenizers
from tests.helpers import finetune as F

POSITIVE = ["好看", "精彩", "喜欢", "满意"]
NEGATIVE = ["难看", "无聊", "讨厌", "失望"]
FILLER = list("这部电影的故事我们昨天在家里一起看了觉得非常有点")
SURNAMES = list("张王李赵")
GIVEN = list("伟娜强静")
PLACES = ["北京", "上海", "广州", "深圳"]
NER_FILLER = list("今天去了开会学习工作大学公司的在和")


def _vocab():
  chars = sorted(set("".join(POSITIVE + NEGATIVE + FILLER + SURNAMES + GIVEN + PLACES
                             + NER_FILLER) + "，。！？"))
  return (F.SPECIALS + ["python", "gpu", "##s"] + list("0123456789")
          + [c for c in "abcdefghijklmnopqrstuvwxyz"] + chars)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("zh_init"))
  vocab = _vocab()
  config = F.tiny_config(len(vocab))
  params = model_lib.BertForPreTraining(config).init(
      jax.random.PRNGKey(0), **model_lib.dummy_inputs(config))["params"]
  interop.save_hf(config, jax.tree.map(np.asarray, model_lib.nn.unbox(params)), directory)
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  return directory


def _sentiment_rows(n, seed):
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(n):
    chars = list(rng.choice(FILLER, size=int(rng.integers(4, 9))))
    positive = bool(rng.integers(2))
    word = str(rng.choice(POSITIVE if positive else NEGATIVE))
    at = int(rng.integers(len(chars) + 1))
    rows.append(("".join(chars[:at]) + word + "".join(chars[at:]) + "。",
                 "正面" if positive else "负面"))
  return rows


def _ner_sentences(n, seed):
  """Characters with their BIO tags: names (B-PER I-PER), cities (B-LOC I-LOC), the Latin
  word 'Python' (one line, several wordpieces, tagged O) and a full-width digit that the
  vocabulary lacks ([UNK])."""
  rng = np.random.default_rng(seed)
  sentences = []
  for _ in range(n):
    chars, tags = [], []
    for _ in range(int(rng.integers(4, 9))):
      r = rng.random()
      if r < 0.2:
        chars += [str(rng.choice(SURNAMES)), str(rng.choice(GIVEN))]
        tags += ["B-PER", "I-PER"]
      elif r < 0.4:
        chars += list(str(rng.choice(PLACES)))
        tags += ["B-LOC", "I-LOC"]
      elif r < 0.45:
        chars.append("Pythons" if r < 0.425 else "３")
        tags.append("O")
      else:
        chars.append(str(rng.choice(NER_FILLER)))
        tags.append("O")
    sentences.append((chars + ["。"], tags + ["O"]))
  return sentences


def _config(tmp_path, hf_dir, **kw):
  base = dict(task="classification", init_from=hf_dir, output_dir=str(tmp_path / "out"),
              max_seq_length=24, learning_rate=5e-3, num_epochs=5, log_every_steps=1000,
              length_buckets=1)  # one width: not a bucket test (test_buckets.py is)
  return finetune.FinetuneConfig(**{**base, **kw})


def test_chinese_classification_files_encode_as_bert_tokenizer_does(tmp_path, hf_dir):
  """Chinese sentences (and pairs) from a TSV: the same ids, token types and truncation as
  transformers' BertTokenizer; label names in Chinese. (The training loop
  itself names no language: test_finetune.py shows it learning.)"""
  from transformers import BertTokenizer
  rows = _sentiment_rows(32, 0)
  path = F.write_tsv(tmp_path / "train.tsv", [(a, b, lab) for (a, lab), (b, _) in
                                              zip(rows, rows[1:] + rows[:1])],
                     header=("sentence", "other", "label"))
  examples = fd.read_text_examples(str(path), task="classification", text_pair_column="other")
  labels = fd.infer_label_list(e.label for e in examples)
  assert labels == ["正面", "负面"] or labels == ["负面", "正面"]
  tok = tokenizers.load_tokenizer(os.path.join(hf_dir, "vocab.txt"))
  hf = BertTokenizer(os.path.join(hf_dir, "vocab.txt"), do_lower_case=True)
  ours = fd.encode_text_examples(examples, tok, 32, task="classification", label_list=labels)
  theirs = hf([e.text for e in examples], [e.text_pair for e in examples], max_length=32,
              padding="max_length")
  for key in ("input_ids", "token_type_ids", "attention_mask"):
    np.testing.assert_array_equal(ours[key], theirs[key])
  single = [fd.TextExample(e.text, None, e.label, e.line) for e in examples]
  short = fd.encode_text_examples(single, tok, 8, task="classification", label_list=labels)
  np.testing.assert_array_equal(short["input_ids"], hf(
      [e.text for e in single], truncation=True, max_length=8, padding="max_length")["input_ids"])
  assert [tok.id_to_token(i) for i in ours["input_ids"][0][1:4]] == list(examples[0].text[:3])
  np.testing.assert_array_equal(ours["labels"], [labels.index(e.label) for e in examples])


def test_chinese_character_per_line_ner_aligns_and_learns(tmp_path, hf_dir):
  train = F.write_conll(tmp_path / "train.bio", _ner_sentences(256, 0))
  dev = F.write_conll(tmp_path / "dev.bio", _ner_sentences(96, 1))
  # Alignment: one position per character line, tags on each line's first token.
  tok = tokenizers.load_tokenizer(os.path.join(hf_dir, "vocab.txt"))
  sentences = fd.read_tagged_sentences(str(dev))
  assert sentences[0].tokens == tuple(_ner_sentences(96, 1)[0][0])
  labels = fd.infer_label_list((t for s in sentences for t in s.tags), ner=True)
  enc = fd.encode_tagged_sentences(sentences, tok, 48, label_list=labels)
  for s, pos, ids, lab in zip(sentences, enc.word_positions, enc.arrays["input_ids"],
                              enc.arrays["labels"]):
    assert len(pos) == len(s.tokens)
    for char, tag, p in zip(s.tokens, s.tags, pos):
      assert lab[p] == labels.index(tag)
      if char == "Pythons":
        assert tok.id_to_token(ids[p]) == "python" and tok.id_to_token(ids[p + 1]) == "##s"
        assert lab[p + 1] == fd.IGNORE_INDEX
      elif char == "３":
        assert ids[p] == tok.unk_id
      else:
        assert tok.id_to_token(ids[p]) == char
  results = F.run(_config(tmp_path, hf_dir, task="ner", train_file=str(train),
                                 eval_file=str(dev), predict_file=str(dev), num_epochs=4,
                                 max_seq_length=32))
  assert results["eval_f1"] >= 0.8, results["history"]  # all-'O' scores entity F1 0
  lines = (tmp_path / "out" / "predictions.conll").read_text(encoding="utf-8").split("\n\n")
  first = [line.split() for line in lines[0].splitlines()]
  assert [c for c, _ in first] == list(sentences[0].tokens)


def test_a_gbk_finetuning_file_is_named_with_its_line(tmp_path):
  path = tmp_path / "train.tsv"
  path.write_bytes("sentence\tlabel\n这部电影很好看\t正面\n".encode("gbk"))
  with pytest.raises(fd.DataError, match=r"train\.tsv:2: not valid UTF-8"):
    fd.read_text_examples(str(path), task="classification")
