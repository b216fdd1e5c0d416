"""Atomic file writes: a reader (or a resumed run) never sees a half-written file or
directory. Every temp-then-rename write of bert_jax goes through here."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary name beside `path` for the block to write (e.g. a library that
  takes a file name); renames it over `path` when the block succeeds."""
  tmp = path + ".tmp"
  yield tmp
  os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` (UTF-8) beside `path`, then renames it over `path`."""
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


def write_json_atomic(path: str, value: Any, **dump_kwargs) -> None:
  """`json.dumps(value, **dump_kwargs)` written atomically to `path`."""
  write_text_atomic(path, json.dumps(value, **dump_kwargs))


@contextlib.contextmanager
def atomic_directory(directory: str) -> Iterator[str]:
  """Yields an empty directory beside `directory` for the block to fill; when the block
  succeeds it takes `directory`'s place (an existing one is moved aside, then deleted),
  so `directory` is at every moment either the old whole or the new whole."""
  tmp, old = directory + ".tmp", directory + ".old"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  yield tmp
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(directory):
    os.replace(directory, old)
  os.replace(tmp, directory)
  shutil.rmtree(old, ignore_errors=True)
