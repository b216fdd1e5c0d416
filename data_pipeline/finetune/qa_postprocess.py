"""From per-window start / end logits to answer texts: google-research/bert's rules.

A question's context is cut into overlapping windows (features); the model gives
every token of every window a start and an end logit. For each question:

  * in every window, the `n_best_size` highest start logits and the
    `n_best_size` highest end logits make the candidate spans;
  * a candidate is kept only if both ends are context tokens (not the question,
    [CLS], [SEP] or padding), end >= start, it has at most `max_answer_length`
    tokens, and its start token has its maximum context in this window (a token
    seen by several windows is only answered from the one where it has the most
    words on its shorter side: `token_is_max_context`);
  * candidates are ranked by start + end logit; the first `n_best_size`
    distinct texts form the n-best list, with softmax probabilities over it;
  * the text is cut from the original context by the character offsets of the
    start token's first and the end token's last character, so spaces, case and
    accents are the context's own (also for Chinese, with no spaces at all).

SQuAD v2.0 (questions may have no answer): the null score is the [CLS] start +
end logit; of a question's windows the lowest one counts (the window most sure
that the answer is somewhere, as run_squad.py and transformers take it). The
"null odds" are null score - best non-null span score; the prediction is the
empty answer when the odds exceed `null_score_diff_threshold`. The odds are
written out (`null_odds.json`), so the threshold can be tuned on the eval set
(`qa_metrics.squad_evaluate(..., null_odds)` reports the best one) and applied
without re-running the model (`QAPredictions.with_threshold`).

The text side of QA (it cuts answers out of the text); NumPy only, no jax.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

# The null odds of a question for which no non-empty span was admissible.
NO_SPAN_NULL_ODDS = 1e9


@dataclasses.dataclass(frozen=True)
class QAPredictions:
  """Answers per question id.

  predictions: id -> answer text ("" = no answer), the official file format.
  nbest: id -> list of {text, probability, start_logit, end_logit}, best first.
  null_odds: id -> null score - best non-null score (v2.0 only, else empty).
  best_non_null: id -> the best non-empty answer text (v2.0 re-thresholding).
  """
  predictions: dict[str, str]
  nbest: dict[str, list[dict]]
  null_odds: dict[str, float]
  best_non_null: dict[str, str]

  def with_threshold(self, threshold: float) -> "QAPredictions":
    """The v2.0 answers at another null-score threshold (same n-best, same odds)."""
    if not self.null_odds:
      raise ValueError("with_threshold needs v2.0 predictions (version_2_with_negative)")
    predictions = {qid: ("" if self.null_odds[qid] > threshold else self.best_non_null[qid])
                   for qid in self.predictions}
    return dataclasses.replace(self, predictions=predictions)


def _top(logits: np.ndarray, n: int) -> np.ndarray:
  # Highest first; ties keep the lower position first (run_squad's stable sort).
  return np.argsort(-logits, kind="stable")[:n]


def _softmax(scores: Sequence[float]) -> list[float]:
  if not scores:
    return []
  top = max(scores)
  exps = [math.exp(s - top) for s in scores]
  total = sum(exps)
  return [e / total for e in exps]


@dataclasses.dataclass(frozen=True)
class PostprocessOptions:
  """How answers are chosen (BERT's run_squad.py defaults)."""
  n_best_size: int = 20                   # start / end candidates per window, n-best size
  max_answer_length: int = 30             # longest answer, in tokens
  version_2_with_negative: bool = False   # SQuAD v2.0: "" (no answer) is a candidate
  null_score_diff_threshold: float = 0.0  # v2.0: "" when the null odds exceed this


def postprocess(example_ids: Sequence[str], contexts: Sequence[str],
                feature_example_index: np.ndarray, offsets: np.ndarray,
                is_max_context: np.ndarray, start_logits: np.ndarray, end_logits: np.ndarray,
                options: PostprocessOptions = PostprocessOptions()) -> QAPredictions:
  """Answers for every example from the logits of its windows.

  example_ids, contexts: per example (E of them).
  feature_example_index: [F] int, the example each window belongs to.
  offsets: [F, L, 2] int, per window token its [start, end) character span in
    its example's context; -1 for tokens that are not context (question,
    specials, padding).
  is_max_context: [F, L] bool, whether the token has its maximum context in
    this window.
  start_logits, end_logits: [F, L] float (any float dtype).
  """
  o = options
  if o.n_best_size <= 0 or o.max_answer_length <= 0:
    raise ValueError(f"n_best_size={o.n_best_size} and max_answer_length={o.max_answer_length} "
                     "must be positive")
  feature_example_index = np.asarray(feature_example_index)
  offsets, is_max_context = np.asarray(offsets), np.asarray(is_max_context, bool)
  start_logits = np.asarray(start_logits, np.float64)
  end_logits = np.asarray(end_logits, np.float64)
  _check_shapes(feature_example_index, offsets, is_max_context, start_logits, end_logits)
  if len(example_ids) != len(contexts):
    raise ValueError(f"{len(example_ids)} example ids but {len(contexts)} contexts")
  windows: list[list[int]] = [[] for _ in example_ids]
  for f, e in enumerate(feature_example_index):
    windows[int(e)].append(f)

  out = QAPredictions({}, {}, {}, {})
  for e, (qid, context) in enumerate(zip(example_ids, contexts)):
    if not windows[e]:
      raise ValueError(f"example {qid!r} has no window (feature) to answer from")
    candidates, null = _candidates(windows[e], start_logits, end_logits, offsets,
                                   is_max_context, o)
    entries = _nbest(candidates, null, context, offsets, o)
    probs = _softmax([x["start_logit"] + x["end_logit"] for x in entries])
    out.nbest[qid] = [dict(text=x["text"], probability=p, start_logit=x["start_logit"],
                           end_logit=x["end_logit"]) for x, p in zip(entries, probs)]
    if not o.version_2_with_negative:
      out.predictions[qid] = entries[0]["text"]
      continue
    best = next((x for x in entries if not x["null"] and x["text"]), None)
    if best is None:
      # No non-empty span survived: "no answer" at any sane threshold (finite, so
      # that null_odds.json stays strict JSON).
      out.best_non_null[qid], out.null_odds[qid] = "", NO_SPAN_NULL_ODDS
    else:
      out.best_non_null[qid] = best["text"]
      out.null_odds[qid] = float(null[0] - best["start_logit"] - best["end_logit"])
    out.predictions[qid] = ("" if out.null_odds[qid] > o.null_score_diff_threshold
                            else out.best_non_null[qid])
  return out


def _check_shapes(feature_example_index, offsets, is_max_context, start_logits, end_logits):
  num_features, length = start_logits.shape
  if (end_logits.shape != (num_features, length) or offsets.shape != (num_features, length, 2)
      or is_max_context.shape != (num_features, length)
      or feature_example_index.shape != (num_features,)):
    raise ValueError(
        f"shapes disagree: start_logits {start_logits.shape}, end_logits {end_logits.shape}, "
        f"offsets {offsets.shape}, is_max_context {is_max_context.shape}, "
        f"feature_example_index {feature_example_index.shape}")


def _candidates(windows: list[int], start_logits, end_logits, offsets, is_max_context,
                o: PostprocessOptions):
  """The admissible spans of one example's windows, best first, as (score, start_logit,
  end_logit, window, start, end) (window -1: the null answer, v2.0), and the null score
  (score, start_logit, end_logit) of the window with the lowest one."""
  candidates = []
  null = None
  for f in windows:
    s, t = start_logits[f], end_logits[f]
    if null is None or s[0] + t[0] < null[0]:
      null = (s[0] + t[0], s[0], t[0])
    starts, ends = _top(s, o.n_best_size), _top(t, o.n_best_size)
    in_context = offsets[f, :, 0] >= 0
    ok = (in_context[starts][:, None] & in_context[ends][None, :]
          & is_max_context[f, starts][:, None]
          & (ends[None, :] >= starts[:, None])
          & (ends[None, :] - starts[:, None] + 1 <= o.max_answer_length))
    for i, j in zip(*np.nonzero(ok)):  # row-major: start rank, then end rank
      a, b = int(starts[i]), int(ends[j])
      candidates.append((s[a] + t[b], s[a], t[b], f, a, b))
  if o.version_2_with_negative:
    candidates.append((null[0], null[1], null[2], -1, 0, 0))
  candidates.sort(key=lambda c: -c[0])  # stable: equal scores keep window order
  return candidates, null


def _nbest(candidates, null, context: str, offsets, o: PostprocessOptions) -> list[dict]:
  """The first `n_best_size` distinct answer texts of the ranked candidates, cut from the
  context by character offsets (v2.0: "" always among them)."""
  entries, seen = [], set()
  for _, s_logit, e_logit, f, a, b in candidates:
    if len(entries) >= o.n_best_size:
      break
    text = "" if f < 0 else context[int(offsets[f, a, 0]):int(offsets[f, b, 1])]
    if text in seen:
      continue
    seen.add(text)
    entries.append(dict(text=text, start_logit=float(s_logit), end_logit=float(e_logit),
                        null=f < 0))
  if o.version_2_with_negative and "" not in seen:
    entries.append(dict(text="", start_logit=float(null[1]), end_logit=float(null[2]),
                        null=True))
  if not entries:  # no valid span at all (nothing in the top starts/ends was usable)
    entries.append(dict(text="", start_logit=0.0, end_logit=0.0, null=True))
  return entries
