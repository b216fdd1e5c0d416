"""Exported tokenizer files: transformers' AutoTokenizer yields exactly our ids."""
import os
import sysconfig

import pytest

from data_pipeline.default_corpus import _file_sentences
from data_pipeline.text.hf_tokenizer import export_tokenizer
from data_pipeline.text.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_sentencepiece


@pytest.fixture(scope="module")
def real_text():
  """Real English prose from standard-library modules, plus accents, CJK and odd spacing."""
  root = sysconfig.get_paths()["stdlib"]
  sentences = []
  for name in ("argparse.py", "typing.py", "shutil.py"):
    sentences.extend(_file_sentences(os.path.join(root, name)))
  sentences += ["Héllo WORLD, naïve café — ÜBER straße 123.45 isn't e-mail!", "中文字符 test",
                "  two  spaces   here ", "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ and tabs\tinside"]
  assert len(sentences) > 300
  return sentences


def _check_same_ids(ours, directory, sentences):
  from transformers import AutoTokenizer
  theirs = AutoTokenizer.from_pretrained(directory)
  cls, sep = ours.cls_id, ours.sep_id
  for s in sentences:
    assert theirs(s)["input_ids"] == [cls] + ours.encode(s) + [sep], s
  a, b = sentences[0], sentences[1]
  pair = theirs(a, b)
  ids_a, ids_b = ours.encode(a), ours.encode(b)
  assert pair["input_ids"] == [cls] + ids_a + [sep] + ids_b + [sep]
  assert pair["token_type_ids"] == [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
  assert (theirs.pad_token_id, theirs.cls_token_id, theirs.sep_token_id,
          theirs.mask_token_id, theirs.unk_token_id) == (
              ours.pad_id, ours.cls_id, ours.sep_id, ours.mask_id, ours.unk_id)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_export_matches_autotokenizer(tmp_path, real_text, model_type):
  model = train_sentencepiece(iter(real_text), str(tmp_path / "spm"), vocab_size=500,
                              model_type=model_type)
  ours = load_tokenizer(model)
  out = str(tmp_path / "export")
  written = export_tokenizer(ours, out)
  assert sorted(os.path.basename(p) for p in written) == [
      os.path.basename(model), "tokenizer.json", "tokenizer_config.json"]
  _check_same_ids(ours, out, real_text)
  # bert-jax itself reads the exported directory too (fine-tuning from an export).
  assert load_tokenizer(out).identity == ours.identity


@pytest.mark.parametrize("lowercase", [True, False])
def test_wordpiece_export_matches_autotokenizer(tmp_path, real_text, lowercase):
  from tokenizers import BertWordPieceTokenizer
  trainer = BertWordPieceTokenizer(lowercase=lowercase)
  trainer.train_from_iterator(real_text, vocab_size=800, special_tokens=list(SPECIAL_TOKENS))
  os.makedirs(tmp_path / "wp")
  trainer.save_model(str(tmp_path / "wp"))
  ours = load_tokenizer(str(tmp_path / "wp" / "vocab.txt"), lowercase=lowercase)
  out = str(tmp_path / "export")
  export_tokenizer(ours, out)
  _check_same_ids(ours, out, real_text)
  # The exported vocab.txt loads back into our own tokenizer with the same identity.
  assert load_tokenizer(out).identity == ours.identity
  # BertTokenizer on vocab.txt alone (no tokenizer.json) agrees too, casing from the config.
  os.remove(os.path.join(out, "tokenizer.json"))
  _check_same_ids(ours, out, real_text[:100])
