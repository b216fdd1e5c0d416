"""QA post-processing on hand-made logits: spans, max context, length, null threshold."""
import numpy as np
import pytest

from data_pipeline.finetune import qa_postprocess as PP

# One context of six words; word k covers characters [3k, 3k + 2).
CONTEXT = "w0 w1 w2 w3 w4 w5"
L = 8  # [CLS] q [SEP] c c c c [SEP]


def _window(first_word):
  """Offsets / max-context of a window over words first_word .. first_word + 3."""
  offsets = np.full((L, 2), -1, np.int32)
  for pos in range(4):
    k = first_word + pos
    offsets[3 + pos] = (3 * k, 3 * k + 2)
  return offsets


def _features(windows, max_context):
  offsets = np.stack([_window(w) for w in windows])
  is_max = np.zeros((len(windows), L), bool)
  for f, words in enumerate(max_context):
    for k in words:
      is_max[f, 3 + k - windows[f]] = True
  return offsets, is_max


def _run(start, end, windows=(0,), max_context=((0, 1, 2, 3),), **kw):
  offsets, is_max = _features(windows, max_context)
  return PP.postprocess(["q"], [CONTEXT], np.zeros(len(windows), np.int32), offsets, is_max,
                        np.asarray(start, np.float32), np.asarray(end, np.float32),
                        PP.PostprocessOptions(**kw))


def _logits(spec, n=1):
  out = np.zeros((n, L), np.float32)
  for (f, pos), value in spec.items():
    out[f, pos] = value
  return out


def test_best_span_in_context_only_with_end_after_start():
  # The question token (position 1) has the highest logits, and an end before
  # the start scores more than any valid span: both are ruled out.
  start = _logits({(0, 1): 9.0, (0, 5): 4.0, (0, 4): 1.0})
  end = _logits({(0, 1): 9.0, (0, 3): 6.0, (0, 6): 2.0})
  out = _run(start, end)
  assert out.predictions == {"q": "w2 w3"}  # start word 2 (pos 5), end word 3 (pos 6)
  nbest = out.nbest["q"]
  assert nbest[0]["text"] == "w2 w3" and nbest[0]["start_logit"] == 4.0
  assert len({x["text"] for x in nbest}) == len(nbest)
  assert sum(x["probability"] for x in nbest) == pytest.approx(1.0)
  assert not out.null_odds


def test_max_answer_length_limits_the_span():
  start = _logits({(0, 3): 5.0, (0, 4): 1.0})
  end = _logits({(0, 6): 5.0, (0, 4): 2.0})
  assert _run(start, end).predictions["q"] == "w0 w1 w2 w3"
  # At most 2 tokens: start 3, end 4 (5 + 2) beats start 4, end 4 (1 + 2).
  assert _run(start, end, max_answer_length=2).predictions["q"] == "w0 w1"
  assert _run(start, end, max_answer_length=1).predictions["q"] == "w0"


def test_a_span_is_read_from_the_window_where_its_start_has_max_context():
  # Two windows over words 0-3 and 2-5; word 2 has its max context in window
  # 0, word 3 in window 1. Window 0 strongly prefers the span "w3", whose start
  # it does not own (its owned starts score -10); window 1 prefers "w4".
  windows, owned = (0, 2), ((0, 1, 2), (3, 4, 5))
  start = _logits({(0, 6): 9.0, (1, 5): 2.0, (1, 3): 1.0}, 2)
  start[0, :6] = -10.0
  end = _logits({(0, 6): 9.0, (1, 5): 2.0, (1, 3): 1.0}, 2)
  out = _run(start, end, windows, owned)
  assert out.predictions["q"] == "w4"  # window 1, position 5 = word 4
  # Were word 3 max-context in window 0, its span would win.
  out = _run(start, end, windows, ((0, 1, 2, 3), (4, 5)))
  assert out.predictions["q"] == "w3"


def test_v2_null_score_threshold_and_rethreshold():
  # Two windows; [CLS] scores 3 + 3 in the first, 1 + 1 in the second: the
  # lower (2) is the null score. Best span: 2.5 + 2.5 in window 0.
  windows, owned = (0, 2), ((0, 1, 2), (3, 4, 5))
  start = _logits({(0, 0): 3.0, (1, 0): 1.0, (0, 4): 2.5}, 2)
  end = _logits({(0, 0): 3.0, (1, 0): 1.0, (0, 4): 2.5}, 2)
  out = _run(start, end, windows, owned, version_2_with_negative=True)
  assert out.null_odds["q"] == pytest.approx(2.0 - 5.0)
  assert out.predictions["q"] == "w1"
  texts = [x["text"] for x in out.nbest["q"]]
  assert "" in texts  # the null answer is always in the v2 n-best
  # A threshold below the odds answers "no answer"; re-thresholding needs no model.
  out_low = _run(start, end, windows, owned, version_2_with_negative=True,
                 null_score_diff_threshold=-3.5)
  assert out_low.predictions["q"] == ""
  assert out.with_threshold(-3.5).predictions == out_low.predictions
  assert out_low.with_threshold(0.0).predictions == out.predictions
  with pytest.raises(ValueError, match="v2.0"):
    _run(start, end, windows, owned).with_threshold(0.0)


def test_text_is_cut_by_character_offsets_chinese():
  context = "北京是中国的首都"
  offsets = np.full((1, 12, 2), -1, np.int32)
  offsets[0, 3:11] = [(i, i + 1) for i in range(8)]
  is_max = offsets[..., 0] >= 0
  start = np.zeros((1, 12), np.float32)
  end = np.zeros((1, 12), np.float32)
  start[0, 3], end[0, 4] = 5.0, 5.0
  out = PP.postprocess(["z"], [context], np.zeros(1, np.int32), offsets, is_max, start, end)
  assert out.predictions == {"z": "北京"}


def test_shapes_are_checked():
  offsets, is_max = _features((0,), ((0,),))
  with pytest.raises(ValueError, match="shapes disagree"):
    PP.postprocess(["q"], [CONTEXT], np.zeros(1, np.int32), offsets, is_max,
                   np.zeros((1, L)), np.zeros((1, L - 1)))
