"""Script-aware sentence splitting, line joining, NFKC, and the corpus readers that use
them: Chinese, Japanese, mixed Chinese/English, and non-UTF-8 corpora."""
import pytest

from data_pipeline import corpus
from data_pipeline.text.scripts import TextRules, join_lines, split_sentences


def test_chinese_sentences_with_closers_ellipsis_and_runs_of_enders():
  text = "他说：「你好。」然后走了。今天天气很好！明天呢？？我不知道……也许会下雨。"
  assert split_sentences(text) == ["他说：「你好。」", "然后走了。", "今天天气很好！",
                                   "明天呢？？", "我不知道……", "也许会下雨。"]
  assert split_sentences("“你去过上海吗？”她问。（这是真的。）好吧！") == [
      "“你去过上海吗？”", "她问。", "（这是真的。）", "好吧！"]
  # Commas and colons never end a sentence; a lone … is a pause, not an end.
  assert split_sentences("第一，第二：第三…第四。") == ["第一，第二：第三…第四。"]


def test_semicolon_ends_a_sentence_only_when_asked():
  text = "第一条；第二条；第三条。"
  assert split_sentences(text) == [text]
  assert split_sentences(text, TextRules(semicolon_ends_sentence=True)) == [
      "第一条；", "第二条；", "第三条。"]


def test_japanese_sentences_keep_the_comma():
  text = "東京は日本の首都です。私は、毎日電車で会社に行きます。今日は雨ですか？はい！"
  assert split_sentences(text) == ["東京は日本の首都です。", "私は、毎日電車で会社に行きます。",
                                   "今日は雨ですか？", "はい！"]


def test_mixed_chinese_english_is_split_by_both_rules():
  text = "我用Python写程序!你呢?I like it. Really? Yes. 我也是。Dr. Who went out."
  assert split_sentences(text) == ["我用Python写程序!", "你呢?", "I like it.", "Really?",
                                   "Yes.", "我也是。", "Dr.", "Who went out."]
  # Latin text keeps the old rule: a capital, digit or quote must follow.
  assert split_sentences("It was 3.5 m. long. and then? no.") == [
      "It was 3.5 m. long. and then? no."]


def test_joining_wrapped_lines_puts_no_space_between_cjk_characters():
  assert join_lines(["我们在北京", "大学学习。", "“你好”", "Hello", "world，", "再见"]) == \
      "我们在北京大学学习。“你好” Hello world，再见"
  # Korean separates words with spaces; quotes between Latin words stay Latin.
  assert join_lines(["한국어는", "띄어쓰기를", "합니다."]) == "한국어는 띄어쓰기를 합니다."
  assert join_lines(["he said —", "“yes”"]) == "he said — “yes”"


def test_nfkc_is_an_option_and_runs_after_splitting():
  text = "ＰｙｔｈｏｎとＡＩ！ｶﾀｶﾅです。２０２４年……終わり。"
  assert split_sentences(text) == ["ＰｙｔｈｏｎとＡＩ！", "ｶﾀｶﾅです。", "２０２４年……", "終わり。"]
  assert split_sentences(text, TextRules(nfkc=True)) == [
      "PythonとAI!", "カタカナです。", "2024年......", "終わり。"]


def test_corpus_formats_use_the_rules(tmp_path):
  (tmp_path / "zh.txt").write_text("今天下雨了。我们在北\n京大学学习！\n\n他说：「好。」走吧。\n",
                                   encoding="utf-8")
  paragraphs = list(corpus.iter_text_documents(str(tmp_path / "zh.txt"), "paragraphs"))
  assert [d.sentences for d in paragraphs] == [["今天下雨了。", "我们在北京大学学习！"],
                                               ["他说：「好。」", "走吧。"]]
  lines = list(corpus.iter_text_documents(str(tmp_path / "zh.txt"), "lines"))
  assert [d.sentences for d in lines][1] == ["京大学学习！"]
  (tmp_path / "wide.txt").write_text("ＢＥＲＴ模型\n", encoding="utf-8")
  bert = list(corpus.iter_text_documents(str(tmp_path / "wide.txt"), "bert",
                                         rules=TextRules(nfkc=True)))
  assert bert[0].sentences == ["BERT模型"]


@pytest.mark.parametrize("encoding", ["gb18030", "shift_jis"])
def test_a_corpus_in_another_encoding_is_an_error_naming_file_line_and_flag(tmp_path, encoding):
  text = "Title line\n東京は日本の首都です。\n今日は雨です。\n\n" * 3
  path = tmp_path / f"{encoding}.txt"
  path.write_bytes(text.encode(encoding))
  with pytest.raises(corpus.CorpusError, match=rf"{encoding}\.txt:2: not valid utf-8 .*--encoding"):
    list(corpus.iter_text_documents(str(path), "bert"))
  docs = list(corpus.iter_text_documents(str(path), "bert", encoding=encoding))
  assert docs[0].sentences == ["Title line", "東京は日本の首都です。", "今日は雨です。"]
  with pytest.raises(corpus.CorpusError, match="encoding='nonsense'"):
    list(corpus.iter_text_documents(str(path), "bert", encoding="nonsense"))
  with pytest.raises(corpus.CorpusError, match="not ASCII-compatible"):
    list(corpus.iter_text_documents(str(path), "bert", encoding="utf-16"))
