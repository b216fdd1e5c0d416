"""Imports grain without letting it pull in jax.

grain imports jax opportunistically (profiler hooks, pytree helpers) and falls back to its
own code when jax is missing. data_pipeline must not import jax (a GPU-less data host, or a
process that must not touch accelerators, should not load it), so grain is imported with
jax hidden. If jax is already loaded (the training process), grain simply sees it.
"""
from __future__ import annotations

import importlib.abc
import logging
import sys


class _HideJax(importlib.abc.MetaPathFinder):
  def find_spec(self, fullname, path=None, target=None):
    if fullname == "jax" or fullname.startswith(("jax.", "jaxlib")):
      raise ImportError(f"{fullname} is hidden while data_pipeline imports grain")
    return None


def import_grain():
  """Returns the grain module, imported (once) without importing jax."""
  if "grain" in sys.modules or "jax" in sys.modules:
    import grain
    return grain
  hider = _HideJax()
  sys.meta_path.insert(0, hider)
  # grain logs a warning when its (optional) jax profiler is unavailable: expected here.
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    import grain
  finally:
    sys.meta_path.remove(hider)
    absl_logger.setLevel(level)
  return grain
