"""Chinese end to end in the data pipeline: WordPiece training and parity with
transformers' BertTokenizer, SentencePiece coverage, jieba word starts, Chinese whole-word
masking, the statistics inspect_data reports, and the bad-input messages."""
import json
import os
import subprocess
import sys
import warnings

import jieba
import numpy as np
import pytest
from tests.helpers.cjk import (JAPANESE, PARAGRAPHS, bert_chinese_vocab, chinese_documents,
                               write_paragraph_corpus)
from tests.helpers.data import write_vocab

from data_pipeline import corpus, loader, prepare as prepare_lib
from data_pipeline.text import tokenizer as tokenizers
from data_pipeline.text import scripts as text_scripts
from data_pipeline.text import word_segmentation
from data_pipeline.batch_stats import batch_statistics

from tests.helpers import REPO
MIXED = [
    "我们用Python写了一个小程序，它可以在GPU上训练BERT模型。",
    "Hello WORLD！今天是2018年10月1日，温度３０度。",
    "这家公司成立于1998年，总部位于深圳（Shenzhen）。",
    "他说：“I like it.” 然后笑了……",
    JAPANESE,
] + PARAGRAPHS


@pytest.fixture(scope="module")
def chinese(tmp_path_factory):
  """A paragraph-format Chinese corpus (54 documents of ~40 sentences, hard-wrapped), a
  WordPiece vocabulary trained on it, and the corpus prepared with jieba word starts."""
  root = tmp_path_factory.mktemp("chinese")
  docs = chinese_documents(54, 40)
  path = write_paragraph_corpus(str(root / "zh.txt"), docs)
  sentences = (s for d in corpus.iter_text_documents(path, "paragraphs") for s in d.sentences)
  vocab = tokenizers.train_wordpiece(sentences, str(root / "wordpiece"), vocab_size=1000)
  data_dir = str(root / "data")
  prepare_lib.prepare(data_dir, vocab, inputs=path, options=prepare_lib.PrepareOptions(
      text_format="paragraphs", eval_fraction=0.1, docs_per_shard=16, progress=False,
      word_segmenter="jieba"))
  return {"root": root, "corpus": path, "docs": docs, "vocab": vocab, "data_dir": data_dir}


def _hf_ids(vocab, texts):
  from transformers import BertTokenizer
  hf = BertTokenizer(vocab, do_lower_case=True)
  return [hf.encode(t, add_special_tokens=False) for t in texts], hf


def test_trained_wordpiece_matches_bert_tokenizer_on_mixed_text(chinese):
  manifest = tokenizers.read_tokenizer_manifest(os.path.dirname(chinese["vocab"]))
  assert manifest["kind"] == "wordpiece" and manifest["cjk_fraction"] > 0.7
  tok = tokenizers.load_tokenizer(chinese["vocab"])
  assert tok.tokens()[:5] == list(tokenizers.SPECIAL_TOKENS) and tok.lowercase
  expected, hf = _hf_ids(chinese["vocab"], MIXED)
  assert tok.encode_batch(MIXED) == expected
  pieces = hf.convert_ids_to_tokens(expected[0])
  # Every CJK character its own whole token; Latin words as wordpieces.
  assert pieces[:4] == ["我", "们", "用", "python"] and "##" not in "".join(pieces[4:12])
  assert not any(t.startswith("##") and len(t) == 3 and "\u4e00" <= t[2] <= "\u9fff"
                 for t in tok.tokens())


def test_bert_base_chinese_layout_vocab_matches_bert_tokenizer(tmp_path):
  vocab = bert_chinese_vocab(str(tmp_path / "vocab.txt"))
  tok = tokenizers.load_tokenizer(vocab)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 4, 5, 6, 7)
  expected, hf = _hf_ids(vocab, MIXED)
  assert tok.encode_batch(MIXED) == expected
  assert hf.convert_ids_to_tokens(expected[2])[7:9] == ["19", "##98"]
  # Full-width digits are not in this vocabulary: [UNK], exactly as BertTokenizer says.
  assert tok.unk_id in expected[1]


def test_sentencepiece_character_coverage_follows_the_script(tmp_path, chinese):
  zh = [s for d in chinese["docs"][:20] for s in d]
  en = [f"The model number {i} reads the sentence and predicts words." for i in range(300)]
  tokenizers.train_sentencepiece(zh, str(tmp_path / "zh"), vocab_size=400)
  tokenizers.train_sentencepiece(en, str(tmp_path / "en"), vocab_size=60)
  zh_m = tokenizers.read_tokenizer_manifest(str(tmp_path / "zh"))
  en_m = tokenizers.read_tokenizer_manifest(str(tmp_path / "en"))
  assert zh_m["character_coverage"] == 0.9995 and "CJK" in zh_m["character_coverage_reason"]
  assert en_m["character_coverage"] == 1.0 and en_m["cjk_fraction"] == 0.0


def _jieba_starts(text):
  return {sum(len(w) for w in words[:i]) for words in [list(jieba.cut(text))]
          for i in range(len(words))}


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_word_start_flags_follow_jieba_and_keep_latin_starts(tmp_path, chinese, kind):
  if kind == "wordpiece":
    tok = tokenizers.load_tokenizer(chinese["vocab"])
  else:
    sentences = [s for d in chinese["docs"] for s in d]
    tok = tokenizers.load_tokenizer(tokenizers.train_sentencepiece(
        sentences, str(tmp_path / "spm"), vocab_size=500))
  segment = word_segmentation.load_segmenter("jieba")
  table = tok.word_start_table()
  for text in MIXED[:4] + PARAGRAPHS:
    (ids, spans), = tok.encode_with_offsets([text])
    assert ids == tok.encode(text)
    flags = word_segmentation.word_start_flags(text, ids, spans, table, segment)
    starts = _jieba_starts(text)
    after_bare = False
    for token_id, (s, e), flag in zip(ids, spans, flags):
      surface = text[s:e]
      if not surface.strip():
        after_bare = True  # SentencePiece's bare ▁ starts the word after it.
        continue
      if after_bare:
        assert not flag, (text, surface)
      elif text_scripts.is_cjk(surface[0]):
        assert flag == (s in starts), (text, surface)
      elif s > 0 and text[s - 1].isascii() and text[s - 1].isalnum():
        assert flag == bool(table[token_id]), (text, surface)  # Inside a Latin word.
      elif s > 0 and text_scripts.is_cjk(text[s - 1]):
        assert flag, (text, surface)  # A Latin word right after Chinese starts a word.
      after_bare = False
  # A word of several characters: its first character starts it, the others continue.
  text = "北京大学的研究人员"
  (ids, spans), = tok.encode_with_offsets([text])
  flags = word_segmentation.word_start_flags(text, ids, spans, table, segment)
  if kind == "wordpiece":
    assert list(flags) == [s in _jieba_starts(text) for s, _ in spans]
    assert list(flags).count(True) == len(list(jieba.cut(text)))


def _masked_runs(batch, row):
  w = batch["masked_lm_weights"][row] > 0
  positions = batch["masked_lm_positions"][row][w]
  runs, run = [], [positions[0]] if len(positions) else []
  for p in positions[1:]:
    if p == run[-1] + 1:
      run.append(p)
    else:
      runs.append(run)
      run = [p]
  return runs + ([run] if run else [])


def test_chinese_whole_word_masking_masks_whole_jieba_words(chinese):
  """Every masked run of characters is one jieba word or a union of whole words (checked
  against jieba on the source text), and the mask rate stays 15% +- 1%."""
  it = loader.make_pretraining_iterator(loader.LoaderConfig(
      chinese["data_dir"], global_batch_size=64, max_seq_length=64,
      max_predictions_per_seq=10, whole_word_masking=True))
  assert it.manifest["word_starts"] == "jieba"
  tok = tokenizers.load_tokenizer(chinese["data_dir"])
  # The corpus as one string per document, and jieba's word starts in it (per sentence,
  # as prepare segments).
  texts, starts = [], []
  for doc in corpus.iter_text_documents(chinese["corpus"], "paragraphs"):
    text, bounds = "", set()
    for sentence in doc.sentences:
      bounds |= {len(text) + s for s in _jieba_starts(sentence)}
      text += sentence
    texts.append(text)
    starts.append(bounds | {len(text)})
  batches = [next(it) for _ in range(8)]
  checked = multi_char = 0
  for batch in batches:
    for row in range(len(batch["input_ids"])):
      ids = batch["input_ids"][row].copy()
      w = batch["masked_lm_weights"][row] > 0
      ids[batch["masked_lm_positions"][row][w]] = batch["masked_lm_ids"][row][w]
      segment_a = np.flatnonzero(batch["token_type_ids"][row] == 0)[1:-1]
      pieces = [tok.id_to_token(int(i)) for i in ids[segment_a]]
      if not all(len(p) == 1 and "\u4e00" <= p <= "\u9fff" or p in "，。！？：“”「」…、"
                 for p in pieces):
        continue  # Segment A holds a Latin word or digits: char offsets differ.
      a_text = "".join(pieces)
      hits = [(d, t.find(a_text)) for d, t in enumerate(texts) if a_text in t]
      if len(hits) != 1 or len(a_text) < 12:
        continue  # Ambiguous place in the corpus; most segments are unique.
      d, offset = hits[0]
      for run in _masked_runs(batch, row):
        run = [p for p in run if p in segment_a]
        if not run or run[0] == segment_a[0] or run[-1] == segment_a[-1]:
          continue  # A truncated segment edge may cut a word: it starts a word there.
        first, last = offset + run[0] - 1, offset + run[-1] - 1
        assert first in starts[d] and last + 1 in starts[d], (a_text, run)
        multi_char += len(run) > 1
      checked += 1
  assert checked >= 100, checked
  assert multi_char >= 50  # Whole multi-character words were masked together.
  stats = batch_statistics(batches, it.manifest)
  assert abs(stats["mask_rate"] - 0.15) <= 0.01, stats
  assert abs(stats["mask_frac_mask_token"] - 0.8) < 0.05, stats


def test_inspect_data_statistics_on_chinese_text(chinese):
  """NSP negatives ~50%, ~10% short sequences, mean length within 10% of max_seq_length
  for documents longer than the window: what inspect_data prints for English."""
  out = subprocess.run(
      [sys.executable, "-m", "launch.inspect_data", f"--data_dir={chinese['data_dir']}",
       "--num_batches=30", "--batch_size=64", "--max_seq_length=128", "--show=1",
       "--whole_word_masking"],
      cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ))
  assert out.returncode == 0, out.stderr[-2000:]
  stats = json.loads(out.stdout.strip().splitlines()[-1])
  assert "[MASK->" in out.stdout and "{" in out.stdout  # A rendered example with B.
  assert abs(stats["nsp_positive_rate_multi_sentence_chunks"] - 0.5) <= 0.03, stats
  assert stats["multi_sentence_chunk_share"] > 0.85, stats  # Sentences were found.
  # 10% of chunks draw a short target, uniform on [2, 125]: about half fall below 64.
  assert 0.04 <= stats["short_seq_rate_below_half_length"] <= 0.14, stats
  assert stats["mean_length"] >= 0.9 * 128, stats
  assert abs(stats["mask_rate"] - 0.15) <= 0.01, stats


def test_flags_are_read_only_for_whole_word_masking_and_old_data_is_refused(chinese, tmp_path):
  plain = loader.make_pretraining_iterator(loader.LoaderConfig(
      chinese["data_dir"], global_batch_size=16, max_seq_length=64, max_predictions_per_seq=10))
  batch = next(plain)
  assert batch["input_ids"].max() < plain.manifest["vocab_size"]  # No flag bits left in ids.
  old = tmp_path / "old"
  old.mkdir()
  with open(os.path.join(chinese["data_dir"], "manifest.json")) as f:
    manifest = json.load(f)
  (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2}))
  with pytest.raises(ValueError, match="format version 2 is not the supported 3; prepare the "
                     "data again"):
    loader.make_pretraining_iterator(loader.LoaderConfig(str(old)))


def test_unk_rate_is_counted_and_warned_about(tmp_path, chinese):
  english_vocab = write_vocab(str(tmp_path / "vocab.txt"))
  with pytest.warns(UserWarning, match=r"% of the tokens are \[UNK\] .*train a tokenizer"):
    m = prepare_lib.prepare(str(tmp_path / "d"), english_vocab, inputs=chinese["corpus"],
                            options=prepare_lib.PrepareOptions(text_format="paragraphs",
                                        eval_fraction=0.0, progress=False))
  assert m["unk_rate"] > 0.9 and m["splits"]["train"]["unk_rate"] > 0.9
  with open(os.path.join(chinese["data_dir"], "manifest.json")) as f:
    fitted = json.load(f)
  assert fitted["unk_rate"] < 0.01
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # A vocabulary that fits says nothing.
    prepare_lib.prepare(str(tmp_path / "ok"), chinese["vocab"], inputs=chinese["corpus"],
                        options=prepare_lib.PrepareOptions(text_format="paragraphs", eval_fraction=0.0,
                                    progress=False))


def test_gb18030_corpus_needs_and_accepts_its_encoding(tmp_path, chinese):
  docs = chinese["docs"][:6]
  gb = write_paragraph_corpus(str(tmp_path / "gb.txt"), docs, encoding="gb18030")
  utf = write_paragraph_corpus(str(tmp_path / "utf.txt"), docs)
  with pytest.raises(corpus.CorpusError, match=r"gb\.txt:1: not valid utf-8.*--encoding"):
    prepare_lib.prepare(str(tmp_path / "bad"), chinese["vocab"], inputs=gb,
                        options=prepare_lib.PrepareOptions(text_format="paragraphs", progress=False))
  a = prepare_lib.prepare(str(tmp_path / "gb"), chinese["vocab"], inputs=gb,
                          options=prepare_lib.PrepareOptions(text_format="paragraphs", eval_fraction=0.0,
                                      progress=False, encoding="gb18030"))
  b = prepare_lib.prepare(str(tmp_path / "utf"), chinese["vocab"], inputs=utf,
                          options=prepare_lib.PrepareOptions(text_format="paragraphs", eval_fraction=0.0,
                                      progress=False))
  assert a["splits"]["train"]["tokens"] == b["splits"]["train"]["tokens"]
  assert a["splits"]["train"]["sentences"] == b["splits"]["train"]["sentences"]


def test_missing_segmenter_names_the_extra(tmp_path, chinese, monkeypatch):
  monkeypatch.setitem(sys.modules, "jieba", None)  # import jieba -> ImportError
  with pytest.raises(word_segmentation.SegmenterError, match=r"pip install 'bert-jax\[text\]'"):
    prepare_lib.prepare(str(tmp_path / "d"), chinese["vocab"], inputs=chinese["corpus"],
                        options=prepare_lib.PrepareOptions(text_format="paragraphs", progress=False,
                                    word_segmenter="jieba"))
  assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_exported_chinese_tokenizers_load_in_auto_tokenizer_with_equal_ids(tmp_path, chinese,
                                                                           kind):
  """What launch.export writes for the tokenizer (hf_tokenizer.export_tokenizer) loads in
  AutoTokenizer and gives our ids on Chinese, Japanese and mixed text."""
  from transformers import AutoTokenizer
  from data_pipeline.text import hf_tokenizer
  if kind == "wordpiece":
    path = chinese["vocab"]
  else:
    sentences = [s for d in chinese["docs"] for s in d] + MIXED
    path = tokenizers.train_sentencepiece(sentences, str(tmp_path / "spm"), vocab_size=600)
    assert tokenizers.read_tokenizer_manifest(str(tmp_path / "spm"))["character_coverage"] \
        == 0.9995
  ours = tokenizers.load_tokenizer(path)
  hf_tokenizer.export_tokenizer(ours, str(tmp_path / "hf"))
  hf = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  texts = MIXED + ["罕见字：龘靐齉。", "全角ＡＢＣ１２３，半角ABC123."]
  for text in texts:
    assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text), text
  pair = hf(texts[0], texts[1])
  assert pair["input_ids"] == ([ours.cls_id] + ours.encode(texts[0]) + [ours.sep_id]
                               + ours.encode(texts[1]) + [ours.sep_id])


def test_launchers_take_the_encoding_wordpiece_and_segmenter_flags(tmp_path, chinese):
  gb = write_paragraph_corpus(str(tmp_path / "gb.txt"), chinese["docs"][:8], encoding="gb18030")
  run = lambda module, *flags: subprocess.run(
      [sys.executable, "-m", module, *flags], cwd=REPO, capture_output=True, text=True,
      timeout=300, env=dict(os.environ))
  tok_flags = [f"--input={gb}", "--text_format=paragraphs", "--model_type=wordpiece",
               "--vocab_size=500", f"--output_dir={tmp_path / 'tok'}"]
  bad = run("launch.train_tokenizer", *tok_flags)
  assert bad.returncode != 0 and "gb.txt:1: not valid utf-8" in bad.stderr, bad.stderr[-800:]
  assert "--encoding" in bad.stderr
  good = run("launch.train_tokenizer", *tok_flags, "--encoding=gb18030")
  assert good.returncode == 0, good.stderr[-2000:]
  assert (tmp_path / "tok" / "vocab.txt").exists() and "cjk_fraction=0.8" in good.stdout
  prep = run("launch.prepare_data", f"--input={gb}", "--text_format=paragraphs",
             "--encoding=gb18030", f"--tokenizer={tmp_path / 'tok'}", "--word_segmenter=jieba",
             f"--output_dir={tmp_path / 'data'}", "--eval_fraction=0")
  assert prep.returncode == 0, prep.stderr[-2000:]
  summary = json.loads(prep.stdout.strip().splitlines()[-1])
  assert summary["word_starts"] == "jieba" and summary["unk_rate"] < 0.01
  assert summary["splits"]["train"]["sentences"] > 8 * 30
