"""Load generation over real HTTP (aiohttp's client) and the raw prediction speed of
the artifact beside PyTorch and onnxruntime: what `launch.benchmark_serve` reports."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Callable, Sequence

import numpy as np


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
  ms = np.asarray(latencies) * 1000.0
  return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)}


async def _drive(url: str, bodies: Sequence[bytes], in_flight: int, total: int) -> dict:
  import aiohttp  # pylint: disable=import-outside-toplevel
  latencies, errors, counter = [], 0, iter(range(total))
  headers = {"Content-Type": "application/json"}
  connector = aiohttp.TCPConnector(limit=in_flight)
  async with aiohttp.ClientSession(connector=connector) as session:

    async def client():
      nonlocal errors
      for i in counter:
        start = time.perf_counter()
        async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
          await r.read()
          if r.status != 200:
            errors += 1
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(in_flight)])
    elapsed = time.perf_counter() - start
  return dict(in_flight=in_flight, requests=total, errors=errors,
              requests_per_s=total / elapsed, **percentiles(latencies))


def drive(url: str, bodies: Sequence[dict], in_flight: int, total: int) -> dict:
  """Sends `total` requests (cycling through `bodies`) with `in_flight` clients, each
  waiting for its answer before the next, over one client session: requests/s and
  latency percentiles. The client shares the machine with the service, so it is kept
  cheap: bodies are encoded once, before the clock starts."""
  encoded = [json.dumps(b).encode() for b in bodies]
  return asyncio.run(_drive(url, encoded, in_flight, total))


def time_batches(run: Callable[[dict], object], batches: Sequence[dict],
                 repeats: int = 1) -> dict:
  """Rows per second and mean ms per batch of `run` over `batches` (after one warm-up
  pass, which also compiles what needs compiling)."""
  for b in batches:
    run(b)
  start = time.perf_counter()
  for _ in range(repeats):
    for b in batches:
      run(b)
  elapsed = time.perf_counter() - start
  rows = sum(len(b["input_ids"]) for b in batches) * repeats
  return dict(rows_per_s=rows / elapsed, ms_per_batch=1000 * elapsed / (len(batches) * repeats))
