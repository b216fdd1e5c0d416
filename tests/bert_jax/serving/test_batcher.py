"""The batcher's scheduling, in process, against a stand-in model whose calls the test
holds and releases: a request to an idle model is dispatched at once (or after
max_wait_ms for company), what arrives while a batch runs goes into the next one
together, and close() answers what is queued. (Answers against the real artifact, and
their independence of the batch: test_service.)"""
import asyncio
import threading
import time

import numpy as np
import pytest

from bert_jax.serving import batcher as batcher_lib

WIDTH = 8


class HeldModel:
  """An artifact stand-in: each row's prediction is the sum of its ids; every call
  records its batch size and, while `hold` is set, waits for the test to `release()`."""

  manifest = {"bucket_widths": [WIDTH], "max_seq_length": WIDTH}

  def __init__(self, hold=False):
    self.calls = []
    self.hold = hold
    self.started = threading.Semaphore(0)
    self._gate = threading.Semaphore(0)

  def compile(self, shapes):
    del shapes

  def run(self, batch, *, strict):
    assert strict
    self.calls.append(len(batch["input_ids"]))
    self.started.release()
    if self.hold:
      assert self._gate.acquire(timeout=60), "the test never released the model"
    return {"predictions": batch["input_ids"].sum(axis=1)}

  def release(self, n=1):
    for _ in range(n):
      self._gate.release()

  def wait_started(self):
    assert self.started.acquire(timeout=60), "the model was not called"


def _rows(*values):
  """One row per value: [value, 1, 0, ...] (length 2)."""
  ids = np.zeros((len(values), WIDTH), np.int32)
  ids[:, 0], ids[:, 1] = values, 1
  mask = (ids > 0).astype(np.int32)
  return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}


def _answers(results):
  return [r.tolist() for r in results]


async def _in_thread(fn):
  return await asyncio.get_running_loop().run_in_executor(None, fn)


def _run(model, test, **kw):
  """Runs `test(batcher)` on an event loop with a started batcher; closes it after."""
  batcher = batcher_lib.Batcher(model, **kw)

  async def main():
    batcher.start()
    try:
      return await asyncio.wait_for(test(batcher), 60)
    finally:
      await _in_thread(batcher.close)

  return asyncio.run(main()), batcher


def test_requests_that_arrive_while_a_batch_runs_go_together_into_the_next():
  model = HeldModel(hold=True)

  async def test(batcher):
    first = asyncio.ensure_future(batcher.submit(_rows(5)))
    await _in_thread(model.wait_started)  # running alone: the model was idle
    later = [asyncio.ensure_future(batcher.submit(_rows(v))) for v in (10, 20)]
    later.append(asyncio.ensure_future(batcher.submit(_rows(30, 40))))
    await asyncio.sleep(0.05)
    model.release(2)
    return await asyncio.gather(first, *later)

  answers, batcher = _run(model, test, max_batch=8, max_wait_ms=0)
  assert _answers(answers) == [[6], [11], [21], [31, 41]]
  assert model.calls == [1, 4]  # then the 4 rows queued meanwhile, in one call
  assert (batcher.stats.dispatches, batcher.stats.requests, batcher.stats.rows) == (2, 4, 5)


def test_a_batch_takes_at_most_max_batch_rows_and_a_larger_request_runs_alone():
  model = HeldModel(hold=True)

  async def test(batcher):
    first = asyncio.ensure_future(batcher.submit(_rows(1)))
    await _in_thread(model.wait_started)
    rest = [asyncio.ensure_future(batcher.submit(_rows(*v)))
            for v in ((2, 3), (4,), (5, 6), (7, 8, 9, 10, 11))]
    await asyncio.sleep(0.05)
    model.release(5)
    return await asyncio.gather(first, *rest)

  answers, _ = _run(model, test, max_batch=4, max_wait_ms=0)
  assert _answers(answers) == [[2], [3, 4], [5], [6, 7], [8, 9, 10, 11, 12]]
  # 1 | 2+1 rows (the next request would make 5) | 2 | 5 rows alone, cut at max_batch.
  assert model.calls == [1, 4, 2, 1, 4]


def test_max_wait_is_how_long_a_request_to_an_idle_model_waits_for_company():
  model = HeldModel()

  async def alone(batcher):
    start = time.monotonic()
    answer = await batcher.submit(_rows(3))
    return answer, time.monotonic() - start

  (answer, waited), _ = _run(model, alone, max_batch=4, max_wait_ms=300)
  assert answer.tolist() == [4] and waited >= 0.3 and model.calls == [1]

  model = HeldModel()

  async def filled(batcher):
    first = asyncio.ensure_future(batcher.submit(_rows(1)))
    await asyncio.sleep(0.2)
    assert model.calls == []  # waiting for company, up to a minute
    rest = [asyncio.ensure_future(batcher.submit(_rows(v))) for v in (2, 3, 4)]
    return await asyncio.gather(first, *rest)  # a full batch goes at once

  answers, _ = _run(model, filled, max_batch=4, max_wait_ms=60_000)
  assert _answers(answers) == [[2], [3], [4], [5]] and model.calls == [4]


def test_requests_queued_while_the_model_is_busy_do_not_wait_max_wait():
  model = HeldModel(hold=True)

  async def test(batcher):
    full = asyncio.ensure_future(batcher.submit(_rows(1, 2)))  # a full batch: no wait
    await _in_thread(model.wait_started)
    late = asyncio.ensure_future(batcher.submit(_rows(7)))
    await asyncio.sleep(0.05)
    model.release(2)
    start = time.monotonic()
    answers = await asyncio.gather(full, late)
    return answers, time.monotonic() - start

  (answers, took), _ = _run(model, test, max_batch=2, max_wait_ms=60_000)
  assert _answers(answers) == [[2, 3], [8]] and model.calls == [2, 1]
  assert took < 30  # not the minute of max_wait


def test_close_answers_what_is_queued_and_a_failed_batch_fails_its_own_requests():
  model = HeldModel(hold=True)

  async def test(batcher):
    first = asyncio.ensure_future(batcher.submit(_rows(1)))
    await _in_thread(model.wait_started)
    queued = asyncio.ensure_future(batcher.submit(_rows(2)))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(_in_thread(batcher.close))
    model.release(2)
    await closing
    with pytest.raises(RuntimeError, match="not running"):
      await batcher.submit(_rows(3))
    return await asyncio.gather(first, queued)

  answers, _ = _run(model, test, max_batch=4)
  assert _answers(answers) == [[2], [3]]

  class Failing(HeldModel):
    def run(self, batch, *, strict):
      if (batch["input_ids"][:, 0] == 13).any():
        raise ValueError("bad batch")
      return super().run(batch, strict=strict)

  async def test_failure(batcher):
    with pytest.raises(ValueError, match="bad batch"):
      await batcher.submit(_rows(13))
    return await batcher.submit(_rows(4))  # the model thread serves on

  answer, _ = _run(Failing(), test_failure, max_batch=4)
  assert answer.tolist() == [5]


def test_warm_up_compiles_every_batch_size_at_every_width():
  assert batcher_lib.batch_sizes(1) == (1,)
  assert batcher_lib.batch_sizes(32) == (1, 2, 4, 8, 16, 32)
  assert batcher_lib.batch_sizes(12) == (1, 2, 4, 8, 12)

  class Recording(HeldModel):
    manifest = {"bucket_widths": [8, 16], "max_seq_length": 16}
    compiled = None

    def compile(self, shapes):
      self.compiled = sorted(shapes)

  model = Recording()
  batcher_lib.Batcher(model, max_batch=3).warm_up()
  assert model.compiled == [(1, 8), (1, 16), (2, 8), (2, 16), (3, 8), (3, 16)]
  with pytest.raises(ValueError, match="max_wait_ms"):
    batcher_lib.Batcher(HeldModel(), max_wait_ms=-1)


def _partitions(items):
  if not items:
    yield []
    return
  first, rest = items[0], items[1:]
  for part in _partitions(rest):
    yield [[first]] + part
    for i in range(len(part)):
      yield part[:i] + [[first] + part[i]] + part[i + 1:]


def _call_cost(group, lengths, widths, sizes, cost):
  width = next(w for w in widths if w >= max(lengths[i] for i in group))
  return cost[(next(s for s in sizes if s >= len(group)), width)]


@pytest.mark.parametrize("seed", range(6))
def test_plan_calls_is_the_cheapest_grouping_of_the_rows(seed):
  """Against every partition of the rows (brute force), under costs drawn at random
  (monotone in size and width, as run times are) and the stand-in FLOP costs."""
  rng = np.random.default_rng(seed)
  widths, sizes = (8, 16, 32), batcher_lib.batch_sizes(4)
  lengths = rng.integers(1, 33, 7)
  drawn = np.cumsum(np.cumsum(rng.uniform(0.1, 1, (len(sizes), len(widths))), 0), 1)
  for cost in ({(b, w): float(drawn[i, j]) for i, b in enumerate(sizes)
                for j, w in enumerate(widths)},
               batcher_lib.flop_costs((b, w) for b in sizes for w in widths)):
    calls = batcher_lib.plan_calls(lengths, widths, sizes, cost)
    assert sorted(np.concatenate([c for c, _, _ in calls]).tolist()) == list(range(7))
    for chunk, size, width in calls:
      assert len(chunk) <= size <= 4 and (lengths[chunk] <= width).all()
    got = sum(cost[(size, width)] for _, size, width in calls)
    best = min(sum(_call_cost(g, lengths, widths, sizes, cost) for g in part)
               for part in _partitions(list(range(7))) if all(len(g) <= 4 for g in part))
    assert got == pytest.approx(best)


def test_short_rows_ride_in_a_wider_calls_padding_rows():
  """With a call's fixed cost worth 100 tokens: two short rows join two long ones rather
  than pay a call; four short ones are worth a call of their own."""
  cost = {(b, w): b * w + 100.0 for b in (1, 2, 4) for w in (8, 32)}
  calls = batcher_lib.plan_calls(np.array([30, 3, 29, 4]), (8, 32), (1, 2, 4), cost)
  assert [(sorted(c.tolist()), b, w) for c, b, w in calls] == [([0, 1, 2, 3], 4, 32)]
  calls = batcher_lib.plan_calls(np.array([30, 3, 4, 5, 6]), (8, 32), (1, 2, 4), cost)
  assert [(sorted(c.tolist()), b, w) for c, b, w in calls] == [([1, 2, 3, 4], 4, 8),
                                                              ([0], 1, 32)]


def test_per_token_outputs_are_a_rows_own_whether_alone_or_in_a_wider_call():
  """A per-token model whose output at a padded position is 1: a short row run in a
  wider call answers as alone (its own width's positions; zeros past them)."""

  class PerToken(HeldModel):
    manifest = {"bucket_widths": [4, 8], "max_seq_length": 8}

    def run(self, batch, *, strict):
      self.calls.append(batch["input_ids"].shape)
      return {"predictions": batch["input_ids"] + 1}

  def rows(*lengths):
    ids = np.zeros((len(lengths), 8), np.int32)
    for i, n in enumerate(lengths):
      ids[i, :n] = 5
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
            "attention_mask": (ids > 0).astype(np.int32)}

  model = PerToken()
  b = batcher_lib.Batcher(model, max_batch=4, per_token=True)
  alone = b.execute([rows(2)])[0]
  together = b.execute([rows(7), rows(2)])[1]
  assert model.calls == [(1, 4), (2, 8)]  # the short row ran at width 8 the second time
  np.testing.assert_array_equal(alone, [[6, 6, 1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(together, alone)
