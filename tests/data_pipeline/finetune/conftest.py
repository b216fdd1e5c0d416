"""Tokenizers shared by the QA file and window tests."""
import pytest

from data_pipeline.text.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_sentencepiece

WORDS = ["paris", "is", "the", "capital", "of", "france", "where", "what", "city", "who",
         "un", "##i", "##n", "cafe", "!", ",", "."] + [f"w{i}" for i in range(10)]
CJK = list("北京是中国的首都哪里台湾大学在")


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
  d = tmp_path_factory.mktemp("wp")
  (d / "vocab.txt").write_text("\n".join(list(SPECIAL_TOKENS) + WORDS + CJK) + "\n")
  return load_tokenizer(str(d / "vocab.txt"))


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
  text = (["Paris is the capital of France.", "Where is the capital city?",
           "北京是中国的首都。", "台湾大学在哪里？", "  two  spaces  Café ÜBER"] * 40)
  model = train_sentencepiece(iter(text), str(tmp_path_factory.mktemp("spm")), vocab_size=54)
  return load_tokenizer(model)
