"""Tokenizers: SentencePiece training with BERT's specials; WordPiece parity with transformers."""
import os
import sysconfig

import pytest

from data_pipeline.default_corpus import _file_sentences
from data_pipeline.text.tokenizer import (SPECIAL_TOKENS, TokenizerError, load_tokenizer,
                                      train_sentencepiece)


@pytest.fixture(scope="module")
def real_text():
  """Real English: the prose of a few standard-library modules (present everywhere)."""
  root = sysconfig.get_paths()["stdlib"]
  sentences = []
  for name in ("argparse.py", "typing.py", "subprocess.py", "threading.py", "shutil.py"):
    sentences.extend(_file_sentences(os.path.join(root, name)))
  sentences += ["Héllo WORLD, naïve café — ÜBER straße 123.45 isn't e-mail!", "中文字符 test"]
  assert len(sentences) > 500
  return sentences


def _train_wordpiece(sentences, path, lowercase):
  from tokenizers import BertWordPieceTokenizer
  tok = BertWordPieceTokenizer(lowercase=lowercase)
  tok.train_from_iterator(sentences, vocab_size=1500, special_tokens=list(SPECIAL_TOKENS))
  os.makedirs(path, exist_ok=True)
  tok.save_model(path)
  return os.path.join(path, "vocab.txt")


@pytest.mark.parametrize("lowercase", [True, False])
def test_wordpiece_ids_equal_transformers_bert_tokenizer(tmp_path, real_text, lowercase):
  from transformers import BertTokenizer
  vocab = _train_wordpiece(real_text, str(tmp_path / "wp"), lowercase)
  ours = load_tokenizer(vocab)
  assert ours.lowercase == lowercase  # Inferred from the vocabulary's casing.
  ref = BertTokenizer(vocab, do_lower_case=lowercase)
  for sentence in real_text:
    assert ours.encode(sentence) == ref.encode(sentence, add_special_tokens=False), sentence
  batch = ours.encode_batch(real_text[:50])
  assert batch == [ours.encode(s) for s in real_text[:50]]
  assert (ours.pad_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
      ref.pad_token_id, ref.cls_token_id, ref.sep_token_id, ref.mask_token_id)
  starts = ours.word_start_table()
  assert not starts[[i for i, t in enumerate(ours.tokens()) if t.startswith("##")]].any()


def test_sentencepiece_training_and_interface(tmp_path, real_text):
  model = train_sentencepiece(iter(real_text), str(tmp_path), vocab_size=600)
  tok = load_tokenizer(str(tmp_path))
  assert [tok.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert tok.vocab_size == 600
  ids = tok.encode("The parser reads the arguments.")
  assert ids and min(ids) > 4
  assert tok.decode(ids) == "The parser reads the arguments."
  # Word starts: the first piece of every word carries SentencePiece's space mark.
  flags = tok.word_starts(ids)
  assert flags[0] and flags.sum() == len("The parser reads the arguments.".split())
  bpe = load_tokenizer(train_sentencepiece(iter(real_text), str(tmp_path / "bpe"), 600, "bpe"))
  assert bpe.identity != tok.identity and tok.identity == load_tokenizer(model).identity
  saved = tok.save(str(tmp_path / "copy"))
  assert load_tokenizer(saved).identity == tok.identity


def test_tokenizers_without_bert_specials_are_refused(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
  with pytest.raises(TokenizerError, match=r"\[PAD\] has id 1"):
    load_tokenizer(str(vocab))
  vocab.write_text("[PAD]\n[UNK]\n[CLS]\nhello\n")
  with pytest.raises(TokenizerError, match=r"lacks the special token \[SEP\]"):
    load_tokenizer(str(vocab))
  with pytest.raises(TokenizerError, match="not found"):
    load_tokenizer(str(tmp_path / "missing.model"))
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"not a model")
  with pytest.raises(TokenizerError, match="not a readable SentencePiece model"):
    load_tokenizer(str(bad))
