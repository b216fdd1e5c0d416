"""Chinese whole-word masking cannot silently not happen: prepare segments a mostly-CJK
corpus by default (word_segmenter="auto", the launcher's default), and whole-word masking
asked on CJK data prepared without word starts is warned about loudly."""
import os
import warnings

import pytest
from tests.helpers.cjk import bert_chinese_vocab, chinese_documents, write_paragraph_corpus
from tests.helpers.data import write_synthetic_corpus, write_vocab

from data_pipeline import loader, prepare as prepare_lib


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  root = tmp_path_factory.mktemp("wwm")
  zh = write_paragraph_corpus(str(root / "zh.txt"), chinese_documents(12, 12))
  en = write_synthetic_corpus(str(root / "en.txt"), num_docs=12)
  return {"root": root, "zh": zh, "en": en,
          "zh_vocab": bert_chinese_vocab(str(root / "zh_vocab.txt")),
          "en_vocab": write_vocab(str(root / "en_vocab.txt"))}


def _prepare(corpora, lang, segmenter, name):
  out = str(corpora["root"] / name)
  fmt = "paragraphs" if lang == "zh" else "bert"
  manifest = prepare_lib.prepare(out, corpora[f"{lang}_vocab"], inputs=corpora[lang],
                                 options=prepare_lib.PrepareOptions(
                                     text_format=fmt, eval_fraction=0.0, progress=False,
                                     word_segmenter=segmenter))
  return out, manifest


def _loader_warnings(data_dir, whole_word_masking):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    it = loader.make_pretraining_iterator(loader.LoaderConfig(
        data_dir, global_batch_size=4, max_seq_length=32, max_predictions_per_seq=4,
        whole_word_masking=whole_word_masking))
    next(it)
  return [str(w.message) for w in caught if "whole_word_masking" in str(w.message)]


def test_auto_segments_a_mostly_chinese_corpus_only(corpora):
  _, zh = _prepare(corpora, "zh", "auto", "zh_auto")
  assert zh["word_starts"] == "jieba"
  choice = zh["settings"]["word_segmenter_choice"]
  assert choice["cjk_fraction"] >= 0.5 and choice["reason"].startswith("auto: ")
  _, en = _prepare(corpora, "en", "auto", "en_auto")
  assert en["word_starts"] is None
  assert en["settings"]["word_segmenter_choice"]["cjk_fraction"] == 0.0


def test_whole_word_masking_on_unsegmented_chinese_is_warned_about(corpora):
  plain, manifest = _prepare(corpora, "zh", None, "zh_plain")
  assert manifest["word_starts"] is None
  said = _loader_warnings(plain, True)
  assert len(said) == 1 and "will NOT be masked whole" in said[0] and plain in said[0]
  assert not _loader_warnings(plain, False)
  segmented, _ = _prepare(corpora, "zh", "jieba", "zh_jieba")
  assert not _loader_warnings(segmented, True)
  english, _ = _prepare(corpora, "en", None, "en_plain")
  assert not _loader_warnings(english, True)


def test_the_choice_does_not_change_the_data_fingerprint(corpora):
  # Data prepared before the choice was recorded resumes: same settings, same fingerprint.
  out, first = _prepare(corpora, "zh", "jieba", "zh_again")
  os.remove(os.path.join(out, "manifest.json"))
  _, again = _prepare(corpora, "zh", "auto", "zh_again")
  assert again["splits"] == first["splits"]
