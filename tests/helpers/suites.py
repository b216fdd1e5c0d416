"""Small GLUE and CLUE folders, every task's files in the exact layout the benchmarks
distribute (a few rows each), written here: no download."""
import json
import os

import numpy as np

from tests.helpers import finetune as F

MNLI_TRAIN = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
              "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
              "sentence2", "label1", "gold_label")
MNLI_DEV = MNLI_TRAIN[:-1] + ("label2", "label3", "label4", "label5", "gold_label")
MNLI_TEST = MNLI_TRAIN[:10]
STSB = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
        "sentence2", "score")
MRPC = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
MRPC_TEST = ("index", "#1 ID", "#2 ID", "#1 String", "#2 String")


def _tsv(path, header, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    if header:
      f.write("\t".join(header) + "\n")
    for row in rows:
      f.write("\t".join(str(v) for v in row) + "\n")


def _sentences(n, seed):
  """(sentence, positive?) pairs of the test vocabulary."""
  return [(text, label == "pos") for text, label in F.sentiment_rows(n, seed)]


def _glue_pair_rows(n, seed, labels):
  rows = []
  for i, ((a, pos), (b, _)) in enumerate(zip(_sentences(n, seed), _sentences(n, seed + 50))):
    rows.append((i, a, b, labels[int(pos) % len(labels)]))
  return rows


def write_glue(root, sizes=(16, 8, 4)):
  """Every GLUE task's folder under `root` (+ diagnostic/), `sizes` rows of train/dev/test."""
  for split, n, seed in zip(("train", "dev", "test"), sizes, (0, 1, 2)):
    sents = _sentences(n, seed)
    labelled = split != "test"
    if labelled:  # CoLA: no header; source, label, mark (* when unacceptable), sentence
      _tsv(f"{root}/CoLA/{split}.tsv", None, [
          ("gj04", int(p), "" if p else "*", s) for s, p in sents])
      _tsv(f"{root}/SST-2/{split}.tsv", ("sentence", "label"), [(s, int(p)) for s, p in sents])
    else:
      _tsv(f"{root}/CoLA/test.tsv", ("index", "sentence"), enumerate(s for s, _ in sents))
      _tsv(f"{root}/SST-2/test.tsv", ("index", "sentence"), enumerate(s for s, _ in sents))
    pairs = _glue_pair_rows(n, seed, ("0", "1"))
    _tsv(f"{root}/MRPC/{split}.tsv", MRPC if labelled else MRPC_TEST,
         [((l if labelled else i), 100 + i, 200 + i, a, b) for i, a, b, l in pairs])
    _tsv(f"{root}/STS-B/{split}.tsv", STSB if labelled else STSB[:-1],
         [(i, "main-news", "x", "2012", i, "none", "none", a, b)
          + ((f"{4.5 if l == '1' else 0.5 + i % 3:.3f}",) if labelled else ())
          for i, a, b, l in pairs])
    qqp = ([(i, 2 * i, 2 * i + 1, a, b, l) for i, a, b, l in pairs] if labelled else
           [(i, a, b) for i, a, b, _ in pairs])
    if split == "train":  # QQP's malformed row: a question broken over two lines
      qqp.append((99, 198, 199, "how do i"))
    _tsv(f"{root}/QQP/{split}.tsv", ("id", "qid1", "qid2", "question1", "question2",
                                     "is_duplicate") if labelled else ("id", "question1",
                                                                       "question2"), qqp)
    nli = _glue_pair_rows(n, seed, ("entailment", "not_entailment"))
    for task, head in (("QNLI", ("index", "question", "sentence", "label")),
                       ("RTE", ("index", "sentence1", "sentence2", "label"))):
      _tsv(f"{root}/{task}/{split}.tsv", head if labelled else head[:-1],
           [r if labelled else r[:-1] for r in nli])
    _tsv(f"{root}/WNLI/{split}.tsv", ("index", "sentence1", "sentence2", "label")[:4 if labelled
                                                                                  else 3],
         [r if labelled else r[:-1] for r in pairs])
  _write_mnli(root, sizes)


def _write_mnli(root, sizes):
  three = ("entailment", "neutral", "contradiction")
  for name, n, seed, head in (("train", sizes[0], 0, MNLI_TRAIN),
                              ("dev_matched", sizes[1], 1, MNLI_DEV),
                              ("dev_mismatched", sizes[1], 3, MNLI_DEV),
                              ("test_matched", sizes[2], 2, MNLI_TEST),
                              ("test_mismatched", sizes[2], 4, MNLI_TEST)):
    rows = []
    for i, a, b, _ in _glue_pair_rows(n, seed, ("0",)):
      label = three[i % 3]
      row = [i, 1000 + i, f"{1000 + i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)",
             a, b]
      if head is MNLI_TRAIN:
        row += [label, label]
      elif head is MNLI_DEV:
        row += [label] * 6
      rows.append(row)
    _tsv(f"{root}/MNLI/{name}.tsv", head, rows)
  _tsv(f"{root}/diagnostic/diagnostic.tsv", ("index", "sentence1", "sentence2"),
       [(i, a, b) for i, a, b, _ in _glue_pair_rows(3, 7, ("0",))])


# ----------------------------------------------------------------------------- CLUE

ZH_POS = ["很好", "喜欢", "满意", "不错"]
ZH_NEG = ["很差", "讨厌", "失望", "糟糕"]
ZH_FILL = ["今天", "我们", "北京", "学校", "图书馆", "老师", "电影", "公司", "朋友", "周末"]


def zh_rows(n, seed):
  """(sentence, positive?) in Chinese: a sentiment word among fillers."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    words = list(rng.choice(ZH_FILL, size=int(rng.integers(2, 5))))
    pos = bool(rng.integers(2))
    words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(ZH_POS if pos else ZH_NEG)))
    out.append(("".join(words) + "。", pos))
  return out


def _jsonl(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _json(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, ensure_ascii=False)


def _clue_classification(root, split, n, seed):
  labelled = split != "test"
  rows = zh_rows(n, seed)
  others = zh_rows(n, seed + 50)

  def with_label(i, row, label):
    return {**row, "label": label} if labelled else {"id": i, **row}

  _jsonl(f"{root}/afqmc_public/{split}.json", [with_label(i, {"sentence1": a, "sentence2": b},
                                                          str(int(p)))
                                               for i, ((a, p), (b, _)) in enumerate(zip(rows, others))])
  _jsonl(f"{root}/tnews_public/{split}.json", [with_label(i, {"sentence": a, "keywords": ""} | (
      {"label_desc": "news_culture" if p else "news_sports"} if labelled else {}),
      "101" if p else "103") for i, (a, p) in enumerate(rows)])
  _jsonl(f"{root}/iflytek_public/{split}.json", [with_label(i, {"sentence": a}, str(int(p) * 11))
                                                 for i, (a, p) in enumerate(rows)])
  three = ("entailment", "neutral", "contradiction")
  for task in ("cmnli", "ocnli"):
    nli = [with_label(i, {"sentence1": a, "sentence2": b}, three[i % 3])
           for i, ((a, _), (b, _)) in enumerate(zip(rows, others))]
    if split == "train":
      nli.append({"sentence1": "你好。", "sentence2": "再见。", "label": "-"})  # no majority
    _jsonl(f"{root}/{task}_public/{split}.json", nli)
  _jsonl(f"{root}/cluewsc2020_public/{split}.json", [with_label(
      i, {"target": {"span1_index": 0, "span1_text": "小明", "span2_index": 6,
                     "span2_text": "他"}, "text": f"小明{a[:4]}，他很高兴。"}, "true" if p else "false")
      for i, (a, p) in enumerate(rows)])
  _jsonl(f"{root}/csl_public/{split}.json", [with_label(
      i, {"abst": a + b, "keyword": ["北京", "学校"]} | ({"id": i} if labelled else {}),
      str(int(p))) for i, ((a, p), (b, _)) in enumerate(zip(rows, others))])


CLUENER_TEXT = [("叶老桂在北京工作。", {"name": {"叶老桂": [[0, 2]]}, "address": {"北京": [[4, 5]]}}),
                ("浙商银行企业信贷部", {"company": {"浙商银行": [[0, 3]]}}),
                ("我们 喜欢北京", {"address": {"北京": [[5, 6]]}})]


def _clue_reading(root, split, n):
  labelled = split != "test"
  context = "小明在北京学习中文。他每天早上去图书馆。"
  qas = [{"id": f"{split.upper()}_0_QUERY_{k}", "question": q,
          **({"answers": [{"text": a, "answer_start": context.index(a)}]} if labelled else {})}
         for k, (q, a) in enumerate([("小明在哪里学习？", "北京"), ("他什么时候去图书馆？", "每天早上")])]
  _json(f"{root}/cmrc2018_public/{split}.json",
        {"version": "v1.0", "data": [{"paragraphs": [{"id": f"{split}_0", "context": context,
                                                      "qas": qas}], "id": f"{split}_0",
                                      "title": "小明"}]})
  _jsonl(f"{root}/cluener_public/{split}.json",
         [({"text": t, "label": l} if labelled else {"id": i, "text": t})
          for i, (t, l) in enumerate(CLUENER_TEXT)])
  questions = [{"question": "小明在哪里学习？", "choice": ["在上海", "在北京", "在深圳"], "answer": "在北京"},
               {"question": "他什么时候去图书馆？", "choice": ["晚上", "每天早上"], "answer": "每天早上"}]
  if not labelled:
    questions = [{"question": q["question"], "choice": q["choice"], "id": k}
                 for k, q in enumerate(questions)]
  docs = [[["小明在北京学习中文。", "他每天早上去图书馆。"], questions, f"m-{split}-1"]]
  if labelled:
    _json(f"{root}/c3_public/d-{split}.json", docs)
    _json(f"{root}/c3_public/m-{split}.json", docs)
  else:
    _json(f"{root}/c3_public/test1.1.json", docs)
  tag = {"train": 1000, "dev": 2000, "test": 3000}[split]
  chid = [{"candidates": ["一石二鸟", "画蛇添足", "守株待兔"],
           "content": f"他这样做真是#idiom{tag + 1:06d}#，多此一举。后来他#idiom{tag + 2:06d}#了。"}]
  name = "test1.1" if split == "test" else split
  _jsonl(f"{root}/chid_public/{name}.json", chid)
  if labelled:
    _json(f"{root}/chid_public/{split}_answer.json", {f"#idiom{tag + 1:06d}#": 1,
                                                      f"#idiom{tag + 2:06d}#": 0})


def write_clue(root, sizes=(16, 8, 4)):
  """Every CLUE task's folder (`<task>_public/`) under `root`."""
  for split, n, seed in zip(("train", "dev", "test"), sizes, (0, 1, 2)):
    _clue_classification(root, split, n, seed)
    _clue_reading(root, split, n)


def chinese_vocab():
  chars = sorted(set("".join(ZH_POS + ZH_NEG + ZH_FILL) + "小明在北京学习中文他每天早上去图书馆"
                     "。，？哪里什么时候上海深圳晚上很高兴" + "叶老桂工作浙商银行企业信贷部我们喜欢"
                     "一石二鸟画蛇添足守株待兔这样做真是多此举后来了＿你好再见"))
  return F.SPECIALS + chars
