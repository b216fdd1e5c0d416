"""Atomic file writes: a reader (or a resumed prepare) never sees a half-written file."""
from __future__ import annotations

import os


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` (UTF-8) beside `path`, then renames it over `path`."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)
