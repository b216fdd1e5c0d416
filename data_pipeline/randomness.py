"""Counter-based random numbers: every draw is a pure function of its coordinates.

`uniform(seed, epoch, stream, index, counter)` hashes (seed, epoch, stream, example index,
counter) with two splitmix64 rounds. No generator state exists, so any example can be made
on any host, in any order, after any resume, and come out identical; and a whole batch of
draws is one vectorised NumPy expression instead of a per-token Python loop.
"""
from __future__ import annotations

import numpy as np

_M64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_COUNTER_BITS = 20  # Counters (token positions, slots) stay below 2**20.

# Streams: one per kind of decision, so that decisions never share a random number.
SHORT_SEQ = 1
SHORT_LEN = 2
A_END = 3
IS_RANDOM_NEXT = 4
RANDOM_DOC = 5
RANDOM_START = 6
TRUNCATE = 7
MASK_SELECT = 8
MASK_WORD = 9
MASK_ACTION = 10
MASK_REPLACEMENT = 11
PACK_ORDER = 12


def _mix(x: np.ndarray) -> np.ndarray:
  x = x ^ (x >> np.uint64(30))
  x = x * _C1
  x = x ^ (x >> np.uint64(27))
  x = x * _C2
  return x ^ (x >> np.uint64(31))


def _key(seed: int, epoch: int, stream: int) -> np.uint64:
  x = 0
  for part in (seed, epoch, stream):
    x = (x * 0x100000001B3 + (part & _M64) + 0x9E3779B97F4A7C15) & _M64
    x ^= x >> 29
  return np.uint64(x)


def bits(seed: int, epoch: int, stream: int, index, counter=0) -> np.ndarray:
  """uint64 hash of the broadcast of `index` and `counter` (non-negative ints)."""
  index = np.asarray(index, dtype=np.uint64)
  counter = np.asarray(counter, dtype=np.uint64)
  with np.errstate(over="ignore"):
    x = (index << np.uint64(_COUNTER_BITS)) | counter
    x = _mix(x ^ _key(seed, epoch, stream))
    return _mix(x + _GOLDEN)


def uniform(seed: int, epoch: int, stream: int, index, counter=0) -> np.ndarray:
  """float64 in [0, 1), shape = broadcast(index, counter)."""
  return (bits(seed, epoch, stream, index, counter) >> np.uint64(11)).astype(np.float64) * (
      1.0 / (1 << 53))


def randint(low, high, u: np.ndarray) -> np.ndarray:
  """Integers uniform on [low, high] (inclusive, elementwise) from uniforms `u`."""
  low = np.asarray(low, dtype=np.int64)
  span = np.asarray(high, dtype=np.int64) - low + 1
  return low + np.minimum((u * span).astype(np.int64), span - 1)


def binomial_half(n: np.ndarray, seed: int, epoch: int, stream: int, index) -> np.ndarray:
  """Binomial(n, 1/2) per element, exactly: the popcount of n fair random bits."""
  n = np.asarray(n, dtype=np.int64)
  words = max(1, int((n.max(initial=0) + 63) // 64))
  h = bits(seed, epoch, stream, np.asarray(index)[..., None], np.arange(words))
  remaining = n[..., None] - 64 * np.arange(words)
  keep = np.clip(remaining, 0, 64).astype(np.uint64)
  with np.errstate(over="ignore"):
    # (1 << 64) overflows; treat a full word separately.
    mask = np.where(keep >= np.uint64(64), np.uint64(_M64),
                    (np.uint64(1) << np.minimum(keep, np.uint64(63))) - np.uint64(1))
  return np.bitwise_count(h & mask).sum(axis=-1).astype(np.int64)
