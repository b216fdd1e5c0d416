"""Dynamic batching: requests' rows run together at shapes compiled up front, answered
one by one.

The model runs on a thread of its own, which takes the queue whenever it is free: a
request that finds the model idle is dispatched at once (after waiting at most
`max_wait_ms` for company; 0 by default), and the requests that arrive while a batch
runs go together into the next one (up to `max_batch` rows), with no wait: they have
waited already. So the batch size follows the load, one row when it is light, up to
`max_batch` when requests queue, and nothing waits on the event loop between batches.

The compiled shapes are (batch size, width): the artifact's bucket widths times the
batch sizes (powers of two up to `max_batch`). `warm_up` compiles each and times one run
of each, and a batch's rows are cut into model calls by `plan_calls`: the least total
measured time over the ways of grouping the rows (sorted by length) into calls, each at
the narrowest width that holds its longest row and the smallest batch size that holds
its rows. So a few short rows ride in a wider call's padding rows instead of paying a
call of their own, and a call is split where the padding it would compute costs more
than another call. Attention never reaches padding (neither padded positions nor
padding rows), so a row's outputs do not depend on what it was batched with, up to
float summation order (the width it ran at); per-token outputs are kept to the row's
own narrowest width, as if it had run alone.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from typing import Any

import jax
import numpy as np

from bert_jax.serving import runtime


def batch_sizes(max_batch: int) -> tuple[int, ...]:
  """1, 2, 4, ... below max_batch, and max_batch."""
  sizes, b = [], 1
  while b < max_batch:
    sizes.append(b)
    b *= 2
  return tuple(sizes + [max_batch])


def _lengths(attention_mask: np.ndarray) -> np.ndarray:
  mask = np.asarray(attention_mask) > 0
  last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
  return np.where(mask.any(axis=1), last, 1)


def narrowest_widths(lengths, widths: tuple[int, ...]) -> np.ndarray:
  """The narrowest of `widths` (ascending) that holds each of `lengths`."""
  return np.asarray(widths)[np.searchsorted(np.asarray(widths), lengths)]


def plan_calls(lengths: np.ndarray, widths: tuple[int, ...], sizes: tuple[int, ...],
               cost: dict[tuple[int, int], float]) -> list[tuple[np.ndarray, int, int]]:
  """[(row indices, batch size, width)]: the model calls that run rows of `lengths` in
  the least total `cost` ({(batch size, width): seconds}) over every grouping of the
  rows, sorted by length, into runs of at most max(sizes) rows (an exact dynamic
  programme; a group at its longest row's narrowest width and the smallest size that
  holds it). Contiguous groups of the sorted rows suffice: swapping a shorter row into
  a group for a longer one never widens a call."""
  lengths = np.asarray(lengths)
  order = np.argsort(lengths, kind="stable")
  width_of = narrowest_widths(lengths[order], widths)
  n, most = len(order), max(sizes)
  size_of = [next(s for s in sizes if s >= k) if k else 0 for k in range(most + 1)]
  best, start = [0.0] + [float("inf")] * n, [0] * (n + 1)
  for j in range(1, n + 1):
    w = int(width_of[j - 1])  # the widest row of any group ending at j
    for i in range(max(0, j - most), j):
      c = best[i] + cost[(size_of[j - i], w)]
      if c < best[j]:
        best[j], start[j] = c, i
  calls, j = [], n
  while j:
    i = start[j]
    calls.append((order[i:j], size_of[j - i], int(width_of[j - 1])))
    j = i
  return calls[::-1]


def flop_costs(shapes) -> dict[tuple[int, int], float]:
  """A stand-in for measured costs: rows x width, plus one row of the narrowest width per
  call (what `plan_calls` weighs before `warm_up` has timed the shapes)."""
  shapes = list(shapes)
  overhead = min(w for _, w in shapes)
  return {(b, w): float(b * w + overhead) for b, w in shapes}


@dataclasses.dataclass
class Stats:
  batches: int = 0      # model calls
  rows: int = 0         # rows run (padding rows not counted)
  padded_rows: int = 0
  dispatches: int = 0   # takes of the queue (each runs one or more requests)
  requests: int = 0


@dataclasses.dataclass
class _Item:
  rows: dict[str, np.ndarray]
  future: asyncio.Future
  arrived: float  # time.monotonic() at submit


class Batcher:
  """`await submit(rows)` -> that request's row predictions (NumPy pytree, [n, ...]).

  `start()` on the serving event loop starts the model thread; `close()` answers what
  is queued and stops it."""

  def __init__(self, artifact: runtime.Artifact, *, max_batch: int = 32,
               max_wait_ms: float = 0.0, per_token: bool = False):
    if max_batch < 1 or max_wait_ms < 0:
      raise ValueError(f"max_batch={max_batch} must be >= 1 and max_wait_ms={max_wait_ms} >= 0")
    self.artifact = artifact
    self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
    self.per_token = per_token
    self.widths = tuple(artifact.manifest["bucket_widths"])
    self.max_len = int(artifact.manifest["max_seq_length"])
    self.sizes = batch_sizes(max_batch)
    self.cost = flop_costs((b, w) for w in self.widths for b in self.sizes)  # until warm_up
    self.stats = Stats()
    # A deque under a condition variable: the event loop appends and notifies, the
    # model thread takes; the lock is never held while the model runs.
    self._queue: collections.deque[_Item] = collections.deque()
    self._queued_rows = 0
    self._cond = threading.Condition()
    self._stopping = False
    self._loop: asyncio.AbstractEventLoop | None = None
    self._thread: threading.Thread | None = None

  def warm_up(self) -> None:
    """Compiles every (batch size, width) the batcher can run (nothing compiles later),
    then times one run of each for `plan_calls`."""
    shapes = [(b, w) for w in self.widths for b in self.sizes]
    self.artifact.compile(shapes)
    self.cost = {shape: self._time(*shape) for shape in shapes}

  def _time(self, size: int, width: int) -> float:
    """Seconds of the faster of two runs of the shape (the first may also allocate)."""
    batch = {k: np.ones((size, width), np.int32) for k in runtime.INPUTS}
    times = []
    for _ in range(2):
      start = time.perf_counter()
      self.artifact.run(batch, strict=True)
      times.append(time.perf_counter() - start)
    return min(times)

  def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Starts the model thread; answers are handed to `loop` (default: the running one)."""
    if self._thread is not None:
      raise RuntimeError("the batcher is already running")
    self._loop = loop or asyncio.get_running_loop()
    self._thread = threading.Thread(target=self._serve, name="model", daemon=True)
    self._thread.start()

  async def submit(self, rows: dict[str, np.ndarray]) -> Any:
    if self._thread is None or self._stopping:
      raise RuntimeError("the batcher is not running")
    item = _Item(rows, self._loop.create_future(), time.monotonic())
    with self._cond:
      self._queue.append(item)
      self._queued_rows += len(rows["input_ids"])
      self._cond.notify()
    return await item.future

  def close(self) -> None:
    """Answers what is queued, then stops the model thread (idempotent)."""
    with self._cond:
      self._stopping = True
      self._cond.notify()
    if self._thread is not None:
      self._thread.join()

  def _serve(self) -> None:
    """The model thread: take, run, hand the answers to the event loop; again."""
    while True:
      items = self._take()
      if items is None:
        return
      if not items:
        continue
      try:
        results = self.execute([item.rows for item in items])
        deliver = (_set_results, items, results)
      except Exception as e:  # pylint: disable=broad-except
        deliver = (_set_exception, items, e)  # a failed batch answers its own requests only
      try:
        self._loop.call_soon_threadsafe(*deliver)
      except RuntimeError:  # the loop is closed: nobody is left to answer
        return

  def _take(self) -> list[_Item] | None:
    """The next batch: what is queued, up to max_batch rows (a larger request alone);
    None once stopping with nothing queued."""
    with self._cond:
      idle = not self._queue
      while not self._queue:
        if self._stopping:
          return None
        self._cond.wait()
      if idle and self.max_wait > 0:  # the first request found the model idle
        deadline = self._queue[0].arrived + self.max_wait
        while self._queued_rows < self.max_batch and not self._stopping:
          remaining = deadline - time.monotonic()
          if remaining <= 0:
            break
          self._cond.wait(remaining)
      items, count = [], 0
      while self._queue and (not items or count + len(self._queue[0].rows["input_ids"])
                             <= self.max_batch):
        items.append(self._queue.popleft())
        count += len(items[-1].rows["input_ids"])
      self._queued_rows -= count
    # Requests whose clients went away (their futures cancelled on the event loop; a
    # read of the state from this thread is safe) are not run.
    live = [item for item in items if not item.future.done()]
    self.stats.dispatches += 1
    self.stats.requests += len(live)
    return live

  def execute(self, requests: list[dict[str, np.ndarray]]) -> list[Any]:
    """Row predictions of each request's rows (run on the model thread)."""
    rows = {k: np.concatenate([r[k] for r in requests]) for k in runtime.INPUTS}
    n = len(rows["input_ids"])
    lengths = _lengths(rows["attention_mask"])
    parts = [(chunk, self._run_chunk(rows, chunk, size, width))
             for chunk, size, width in plan_calls(lengths, self.widths, self.sizes, self.cost)]
    own_width = narrowest_widths(lengths, self.widths)
    outputs = jax.tree.map(lambda *xs: self._scatter(parts, xs, n, own_width),
                           *[out for _, out in parts])
    bounds = np.cumsum([0] + [len(r["input_ids"]) for r in requests])
    return [jax.tree.map(lambda x, a=a, z=z: x[a:z], outputs)
            for a, z in zip(bounds[:-1], bounds[1:])]

  def _run_chunk(self, rows, chunk, size, width):
    batch = {}
    for k in runtime.INPUTS:
      x = np.zeros((size, width), np.int32)
      x[:len(chunk)] = rows[k][chunk, :width]
      batch[k] = x
    self.stats.batches += 1
    self.stats.rows += len(chunk)
    self.stats.padded_rows += size - len(chunk)
    out = self.artifact.run(batch, strict=True)["predictions"]
    return jax.tree.map(lambda x: x[:len(chunk)], out)

  def _scatter(self, parts, pieces, n, own_width):
    first = pieces[0]
    per_token = self.per_token and first.ndim >= 2
    shape = (n, self.max_len) + first.shape[2:] if per_token else (n,) + first.shape[1:]
    out = np.zeros(shape, first.dtype)
    for (chunk, _), piece in zip(parts, pieces):
      if per_token:
        out[chunk, :piece.shape[1]] = piece
      else:
        out[chunk] = piece
    if per_token:  # positions past a row's own width, as when it runs alone: zeros
      out[np.arange(self.max_len)[None, :] >= own_width[:, None]] = 0
    return out


def _set_results(items: list[_Item], results: list[Any]) -> None:
  for item, result in zip(items, results):
    if not item.future.done():  # a client that went away cancelled its future
      item.future.set_result(result)


def _set_exception(items: list[_Item], error: Exception) -> None:
  for item in items:
    if not item.future.done():
      item.future.set_exception(error)
