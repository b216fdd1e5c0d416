"""Chinese (and some Japanese and mixed) text for the CJK tests, written here: no download.

`PARAGRAPHS` are handwritten; `template_sentences` makes as many varied sentences as asked
from word lists (people, places, times, actions, objects, a few English words and digits),
so that documents can be longer than a sequence window. `write_paragraph_corpus` writes
them hard-wrapped at a fixed width with blank lines between documents, as a manual or a
scraped book looks.
"""
import numpy as np

PARAGRAPHS = [
    "今天早上下了一场大雨。街上的行人都打着伞，匆匆忙忙地走向地铁站。"
    "我在门口等了十分钟，公交车才慢慢地开过来！",
    "他说：「我们明天去图书馆吧。」我点了点头。图书馆在学校的东边，离宿舍不远。",
    "这本书一共有三百二十页，我已经读了一半……剩下的部分明天再读？还是今晚读完？",
    "我们用Python写了一个小程序，它可以在GPU上训练BERT模型。训练一共用了3天，"
    "准确率达到了百分之九十二。",
    "北京是中国的首都，也是一座历史悠久的城市。每年秋天，很多游客来这里看红叶。",
    "小明喜欢踢足球，他的妹妹喜欢画画。周末的时候，他们常常一起去公园。",
    "请把窗户关上，外面太冷了！妈妈一边做饭一边听广播。晚饭有米饭、青菜和鱼。",
    "研究人员发现，睡眠不足会影响记忆力。他们建议成年人每天至少睡七个小时。",
    "“你去过上海吗？”她问。“去过两次，”我回答，“第一次是二〇一八年。”",
    "这家公司成立于1998年，总部位于深圳。目前员工超过两万人，业务遍及全球。",
]

JAPANESE = "東京は日本の首都です。私は、毎日電車で会社に行きます。今日は雨が降っています！明日は晴れるでしょうか？"

_PEOPLE = ["我", "他", "她", "我们", "老师", "学生们", "小明", "王先生", "李阿姨", "工程师",
           "医生", "妈妈", "爸爸", "同学们", "研究人员", "孩子们"]
_TIMES = ["今天", "昨天", "明天", "每天早上", "周末", "去年夏天", "下午三点", "晚上",
          "春节期间", "最近"]
_PLACES = ["在北京", "在学校", "在图书馆", "在公园里", "在医院", "在上海", "在公司",
           "在实验室", "在火车站", "在家里"]
_ACTIONS = ["学习中文", "看电影", "写报告", "打篮球", "做实验", "吃饺子", "读小说", "买水果",
            "开会", "画画", "唱歌", "训练模型", "讨论问题", "种花", "修电脑", "听音乐"]
_EXTRAS = ["，心情很好", "，一共花了两个小时", "，觉得非常有意思", "", "", "，用的是Python",
           "，大约有30个人参加", "，结果很成功", "，但是有点累", "，准备下周的考试"]
_ENDS = ["。", "。", "。", "！", "？", "……"]


def template_sentences(n, seed=0):
  """`n` varied Chinese sentences (7-30 characters), each ending with 。！？ or ……"""
  rng = np.random.default_rng(seed)
  pick = lambda words: words[int(rng.integers(len(words)))]
  return [pick(_TIMES) + pick(_PEOPLE) + pick(_PLACES) + pick(_ACTIONS) + pick(_EXTRAS)
          + pick(_ENDS) for _ in range(n)]


def chinese_documents(num_docs, sentences_per_doc, seed=0):
  """Documents (lists of sentences): handwritten paragraphs mixed with template sentences."""
  rng = np.random.default_rng(seed)
  docs = []
  pool = template_sentences(num_docs * sentences_per_doc, seed)
  for d in range(num_docs):
    sentences = pool[d * sentences_per_doc:(d + 1) * sentences_per_doc]
    hand = PARAGRAPHS[d % len(PARAGRAPHS)]
    at = int(rng.integers(len(sentences) + 1))
    docs.append(sentences[:at] + [hand] + sentences[at:])
  return docs


def wrap(text, width):
  return [text[i:i + width] for i in range(0, len(text), width)]


def write_paragraph_corpus(path, docs, width=23, encoding="utf-8"):
  """One document per blank-line-separated paragraph, hard-wrapped at `width` characters."""
  with open(path, "w", encoding=encoding) as f:
    for doc in docs:
      f.write("\n".join(wrap("".join(doc), width)) + "\n\n")
  return path


def bert_chinese_vocab(path, extra_chars=""):
  """A vocab.txt laid out like bert-base-chinese: specials, [unused], punctuation, digits,
  Latin wordpieces (and ## forms), then CJK characters as whole tokens (never ##)."""
  chars = sorted(set("".join(PARAGRAPHS) + JAPANESE + "".join(template_sentences(400))
                     + extra_chars))
  cjk = [c for c in chars if "\u4e00" <= c <= "\u9fff" or "\u3040" <= c <= "\u30ff"]
  punct = sorted({c for c in chars if not c.isalnum() and not c.isspace()}
                 | set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"))
  latin = ["python", "gpu", "bert", "the", "model", "hello", "world", "i", "like", "it",
           "really", "yes", "a", "##s", "##ing", "##ed"]
  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
  digits = [str(d) for d in range(10)] + ["19", "##98", "##0", "##8", "2018", "30", "100"]
  tokens = (["[PAD]"] + [f"[unused{i}]" for i in range(1, 4)] + ["[UNK]", "[CLS]", "[SEP]",
                                                                 "[MASK]"]
            + punct + digits + latin + letters + ["##" + c for c in letters] + cjk)
  tokens = list(dict.fromkeys(tokens))
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(tokens) + "\n")
  return path
