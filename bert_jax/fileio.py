"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""
from __future__ import annotations

import json
import os
from typing import Any


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` (UTF-8) beside `path`, then renames it over `path`."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json_atomic(path: str, value: Any, **dump_kwargs) -> None:
  write_text_atomic(path, json.dumps(value, **dump_kwargs))
