"""Atomic file writes: a reader (or a resumed prepare) never sees a half-written file.

Every file data_pipeline publishes whole is written under a temporary name beside it and
renamed over it (`os.replace`, atomic on one file system) once complete.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str, *, private: bool = False, suffix: str = "") -> Iterator[str]:
  """Yields a temporary name beside `path` to write to; renames it over `path` when the block
  completes (an error leaves `path` as it was).

  private: the name carries this process's id, for a file that several processes may
    write at once (each renames its own whole copy; the last one wins).
  suffix: ends the temporary name (np.savez appends ".npz" to a name without it).
  """
  tmp = f"{path}.tmp{f'-{os.getpid()}' if private else ''}{suffix}"
  yield tmp
  os.replace(tmp, path)


def write_text_atomic(path: str, text: str, *, private: bool = False) -> None:
  """Writes `text` (UTF-8) beside `path`, then renames it over `path`."""
  with atomic_path(path, private=private) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


def write_json_atomic(path: str, value: Any) -> None:
  """JSON, indented, non-ASCII kept (Chinese answers stay readable), newline-terminated."""
  write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
