"""Extractive QA windows: examples (`squad.read_qa_file`) in, model rows with offsets out.

Features (google-research/bert's run_squad.py): the question's tokens, cut to
`max_query_length`; the context's tokens cut into windows of at most
`max_seq_length - len(question) - 3` tokens, [CLS] question [SEP] window [SEP].
`doc_stride` is the STEP between the starts of consecutive windows, in tokens
(BERT's meaning; transformers' `stride` is the OVERLAP instead: at
max_seq_length=384 with a 64-token question a window holds 317 context tokens,
so BERT's doc_stride=128 is an overlap of 189, transformers' stride=189). The
last window ends at the context's end.

Arrays per window (the fine-tuning batch contract plus QA's extras):
  input_ids, token_type_ids, attention_mask  [N, L] int32
  start_positions, end_positions  [N] int32 (labelled files): the answer's first
      and last token in the window, 0 ([CLS]) if the window does not hold the
      whole answer or the question has none
  label_weights  [N] float32 (labelled files): 0 for the windows of an
      answerable question without a verified answer (not trained on), else 1
  example_index  [N] int32: the example (question) the window belongs to
  offsets  [N, L, 2] int32: each context token's [start, end) characters in its
      example's context; -1 for question, specials and padding
  is_max_context  [N, L] bool: the token has its maximum context in this window
      (the most tokens on its shorter side; ties to the longer window)

Never imports jax.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from data_pipeline.finetune.squad import QADataError, QAExample


@dataclasses.dataclass
class QAFeatures:
  """Windows of a list of examples; see the module docstring for the arrays.

  The offsets and max-context masks are kept per context (a SQuAD paragraph's
  questions share one) and laid out per window only when asked for
  (`offsets`, `is_max_context`): for a training file's 100k+ windows of 384
  tokens that layout would take half a gigabyte, and training never reads it.
  """
  arrays: dict[str, np.ndarray]    # input_ids, token_type_ids, attention_mask (+ labels)
  example_index: np.ndarray        # [N] int32
  window_start: np.ndarray         # [N] int32: first context token of the window
  window_length: np.ndarray        # [N] int32: its number of context tokens
  prefix: np.ndarray               # [N] int32: position of its first context token
  context_offsets: list[np.ndarray]  # per example: [T, 2] character spans of its tokens
  context_max: list[np.ndarray]    # per example: [windows, T] bool max-context masks
  skipped: list[str]               # answerable questions without a verified answer (weight 0)
  answer_outside_windows: list[str]  # questions whose answer no single window holds
  _cache: dict = dataclasses.field(default_factory=dict, repr=False)

  def __len__(self):
    return len(self.example_index)

  def _layout(self):
    n, length = self.arrays["input_ids"].shape
    offsets = np.full((n, length, 2), -1, np.int32)
    is_max = np.zeros((n, length), bool)
    window_of_example: dict[int, int] = {}
    for i, e in enumerate(self.example_index):
      w = window_of_example.get(int(e), 0)
      window_of_example[int(e)] = w + 1
      start, size = int(self.window_start[i]), int(self.window_length[i])
      prefix = int(self.prefix[i])
      offsets[i, prefix:prefix + size] = self.context_offsets[e][start:start + size]
      is_max[i, prefix:prefix + size] = self.context_max[e][w, start:start + size]
    self._cache.update(offsets=offsets, is_max_context=is_max)

  @property
  def offsets(self) -> np.ndarray:
    """[N, L, 2] int32: per window token its [start, end) characters in the
    context; -1 outside the context (question, specials, padding)."""
    if "offsets" not in self._cache:
      self._layout()
    return self._cache["offsets"]

  @property
  def is_max_context(self) -> np.ndarray:
    """[N, L] bool: the token has its maximum context in this window."""
    if "is_max_context" not in self._cache:
      self._layout()
    return self._cache["is_max_context"]


def window_starts(num_tokens: int, window: int, doc_stride: int) -> list[tuple[int, int]]:
  """(start, length) of each window over `num_tokens` context tokens.

  Windows of at most `window` tokens whose starts are `doc_stride` apart
  (never more than a window, so no token is skipped); the last one reaches the
  end. BERT's run_squad.py's rule.
  """
  spans, start = [], 0
  while start < num_tokens:
    length = min(num_tokens - start, window)
    spans.append((start, length))
    if start + length == num_tokens:
      break
    start += min(length, doc_stride)
  return spans


def max_context_mask(spans: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
  """[S, T] bool: token t has its maximum context in window s.

  Score of a token in a window: min(tokens left of it, tokens right of it)
  + 0.01 * window length; the highest score wins, the first window on ties.
  """
  positions = np.arange(num_tokens)
  scores = np.full((len(spans), num_tokens), -np.inf)
  for s, (start, length) in enumerate(spans):
    inside = (positions >= start) & (positions < start + length)
    left, right = positions - start, start + length - 1 - positions
    scores[s, inside] = np.minimum(left, right)[inside] + 0.01 * length
  best = np.argmax(scores, axis=0)
  return best[None, :] == np.arange(len(spans))[:, None]


def check_lengths(max_seq_length: int, max_query_length: int, doc_stride: int) -> None:
  """The window arithmetic must leave room for context tokens."""
  if max_query_length <= 0 or doc_stride <= 0:
    raise ValueError(f"max_query_length={max_query_length} and doc_stride={doc_stride} must be "
                     "positive")
  if max_seq_length - max_query_length - 3 < 1:
    raise ValueError(
        f"max_query_length={max_query_length} is too large for max_seq_length={max_seq_length}: "
        f"[CLS] question [SEP] context [SEP] leaves no room for the context (need "
        f"max_query_length <= max_seq_length - 4 = {max_seq_length - 4})")


def answer_token_span(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
  """First and last context token covering characters [start_char, end_char)."""
  starts, ends = offsets[:, 0], offsets[:, 1]
  first = int(np.searchsorted(starts, start_char, side="right")) - 1
  covering = np.nonzero(ends >= end_char)[0]
  last = int(covering[0]) if covering.size else len(offsets) - 1
  first = max(first, 0)
  return first, max(last, first)


def encode_qa_examples(examples: Sequence[QAExample], tokenizer, *, max_seq_length: int = 384,
                       doc_stride: int = 128, max_query_length: int = 64,
                       labels: bool = False) -> QAFeatures:
  """Every window of every example.

  With `labels`, start/end positions label each window from the example's
  first verified answer (run_squad.py trains on one answer), and answerable
  examples without a verified answer get weight 0 (listed in `skipped`): the
  same encoding serves training and evaluation, which scores every question.
  """
  check_lengths(max_seq_length, max_query_length, doc_stride)
  specials = tokenizer.special_ids
  cls, sep = specials["cls_id"], specials["sep_id"]
  contexts = _encode_contexts(tokenizer, examples)
  rows = {k: [] for k in ("ids", "prefix", "start", "length", "example", "starts", "ends",
                          "weights")}
  context_offsets, context_max, skipped, outside = [], [], [], []
  queries = tokenizer.encode_batch([e.question for e in examples]) if examples else []
  for e, example in enumerate(examples):
    doc_ids, doc_offsets = contexts[example.context]
    if not doc_ids:
      raise QADataError(f"{example.where}: the context of {example.id!r} has no tokens")
    query = list(queries[e])[:max_query_length]
    window = max_seq_length - len(query) - 3
    spans = window_starts(len(doc_ids), window, doc_stride)
    context_offsets.append(doc_offsets)
    context_max.append(max_context_mask(spans, len(doc_ids)))
    answer, weight = None, 1.0
    if labels and not example.is_impossible:
      if example.verified:
        first = example.verified[0]
        answer = answer_token_span(doc_offsets, first.start, first.start + len(first.text))
        if answer[1] - answer[0] + 1 > window:
          outside.append(example.id)
      else:
        skipped.append(example.id)
        weight = 0.0
    prefix = len(query) + 2
    for start, length in spans:
      rows["ids"].append([cls] + query + [sep] + doc_ids[start:start + length] + [sep])
      for key, value in (("prefix", prefix), ("start", start), ("length", length),
                         ("example", e)):
        rows[key].append(value)
      if labels:
        inside = answer is not None and start <= answer[0] and answer[1] < start + length
        rows["starts"].append(answer[0] - start + prefix if inside else 0)
        rows["ends"].append(answer[1] - start + prefix if inside else 0)
        rows["weights"].append(weight)
  as_int = lambda key: np.asarray(rows[key], np.int32)  # noqa: E731
  return QAFeatures(_arrays(rows, max_seq_length, specials["pad_id"], labels),
                    as_int("example"), as_int("start"), as_int("length"), as_int("prefix"),
                    context_offsets, context_max, skipped, outside)


def _encode_contexts(tokenizer, examples: Sequence[QAExample]
                     ) -> dict[str, tuple[list[int], np.ndarray]]:
  """Each distinct context (a SQuAD paragraph's questions share one) -> its token ids and
  their [T, 2] character spans, trimmed of whitespace (an answer never starts with a space)."""
  unique = list(dict.fromkeys(e.context for e in examples))
  encoded = tokenizer.encode_with_offsets(unique, trim_whitespace=True)
  return {context: (list(ids), np.asarray(spans, np.int32).reshape(-1, 2))
          for context, (ids, spans) in zip(unique, encoded)}


def _arrays(rows: dict, max_seq_length: int, pad: int, labels: bool) -> dict[str, np.ndarray]:
  """The model rows, padded: [CLS] question [SEP] window [SEP] [PAD]... (+ labels)."""
  n = len(rows["ids"])
  input_ids = np.full((n, max_seq_length), pad, np.int32)
  token_type_ids = np.zeros((n, max_seq_length), np.int32)
  attention_mask = np.zeros((n, max_seq_length), np.int32)
  for i, (ids, prefix) in enumerate(zip(rows["ids"], rows["prefix"])):
    input_ids[i, :len(ids)] = ids
    token_type_ids[i, prefix:len(ids)] = 1
    attention_mask[i, :len(ids)] = 1
  arrays = dict(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
  if labels:
    arrays["start_positions"] = np.asarray(rows["starts"], np.int32)
    arrays["end_positions"] = np.asarray(rows["ends"], np.int32)
    arrays["label_weights"] = np.asarray(rows["weights"], np.float32)
  return arrays
