"""Dynamic batching: requests' rows gathered for at most `max_wait_ms` or `max_batch`
rows, run in length buckets at shapes compiled up front, answered one by one.

Each row goes to the narrowest bucket width that holds it (a function of the row
alone) and is trimmed to it; a bucket's rows are cut into chunks of at most
`max_batch`, each padded with empty rows to the next compiled batch size (powers of two
up to `max_batch`). Attention never reaches padding (neither padded positions nor
padding rows), so a row's outputs do not depend on what it was batched with.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
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


@dataclasses.dataclass
class Stats:
  batches: int = 0
  rows: int = 0
  padded_rows: int = 0


class Batcher:
  """`await submit(rows)` -> that request's row predictions (NumPy pytree, [n, ...])."""

  def __init__(self, artifact: runtime.Artifact, *, max_batch: int = 32,
               max_wait_ms: float = 5.0, per_token: bool = False):
    if max_batch < 1 or max_wait_ms < 0:
      raise ValueError(f"max_batch={max_batch} must be >= 1 and max_wait_ms={max_wait_ms} >= 0")
    self.artifact = artifact
    self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
    self.per_token = per_token
    self.widths = tuple(artifact.manifest["bucket_widths"])
    self.max_len = int(artifact.manifest["max_seq_length"])
    self.sizes = batch_sizes(max_batch)
    self.stats = Stats()
    self._pending: collections.deque = collections.deque()
    self._arrived: asyncio.Event | None = None
    self._device = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")

  def warm_up(self) -> None:
    """Compiles every (batch size, width) the batcher can run: nothing compiles later."""
    self.artifact.compile([(b, w) for w in self.widths for b in self.sizes])

  async def submit(self, rows: dict[str, np.ndarray]) -> Any:
    if self._arrived is None:
      raise RuntimeError("the batcher is not running")
    future = asyncio.get_running_loop().create_future()
    self._pending.append((rows, future))
    self._arrived.set()
    return await future

  async def run(self) -> None:
    """The batching loop (a task on the server's event loop)."""
    self._arrived = asyncio.Event()
    loop = asyncio.get_running_loop()
    while True:
      items = await self._gather()
      try:
        results = await loop.run_in_executor(self._device, self.execute,
                                             [rows for rows, _ in items])
      except Exception as e:  # pylint: disable=broad-except
        for _, future in items:  # a failed batch answers its own requests only
          if not future.done():
            future.set_exception(e)
        continue
      for (_, future), result in zip(items, results):
        if not future.done():  # a client that went away cancelled its future
          future.set_result(result)

  async def _gather(self) -> list:
    # A deque and an Event rather than asyncio.Queue: cancelling a timed-out wait on the
    # Event can never lose a request (a timed-out Queue.get could, before Python 3.12).
    while not self._pending:
      self._arrived.clear()
      await self._arrived.wait()
    items, count = [], 0
    deadline = time.monotonic() + self.max_wait
    while True:
      while self._pending and count < self.max_batch:
        items.append(self._pending.popleft())
        count += len(items[-1][0]["input_ids"])
      remaining = deadline - time.monotonic()
      if count >= self.max_batch or remaining <= 0:
        return items
      self._arrived.clear()
      try:
        await asyncio.wait_for(self._arrived.wait(), remaining)
      except asyncio.TimeoutError:
        pass

  def execute(self, requests: list[dict[str, np.ndarray]]) -> list[Any]:
    """Row predictions of each request's rows (run on the model thread)."""
    rows = {k: np.concatenate([r[k] for r in requests]) for k in runtime.INPUTS}
    n = len(rows["input_ids"])
    bucket = np.searchsorted(np.asarray(self.widths), _lengths(rows["attention_mask"]))
    parts = []
    for b, width in enumerate(self.widths):
      index = np.flatnonzero(bucket == b)
      for start in range(0, len(index), self.max_batch):
        chunk = index[start:start + self.max_batch]
        parts.append((chunk, self._run_chunk(rows, chunk, width)))
    outputs = jax.tree.map(lambda *xs: self._scatter(parts, xs, n),
                           *[out for _, out in parts])
    bounds = np.cumsum([0] + [len(r["input_ids"]) for r in requests])
    return [jax.tree.map(lambda x, a=a, z=z: x[a:z], outputs)
            for a, z in zip(bounds[:-1], bounds[1:])]

  def _run_chunk(self, rows, chunk, width):
    size = next(s for s in self.sizes if s >= len(chunk))
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

  def _scatter(self, parts, pieces, n):
    first = pieces[0]
    per_token = self.per_token and first.ndim >= 2
    shape = (n, self.max_len) + first.shape[2:] if per_token else (n,) + first.shape[1:]
    out = np.zeros(shape, first.dtype)
    for (chunk, _), piece in zip(parts, pieces):
      if per_token:
        out[chunk, :piece.shape[1]] = piece
      else:
        out[chunk] = piece
    return out

  def close(self) -> None:
    self._device.shutdown(wait=True)
