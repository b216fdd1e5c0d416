"""JAX's persistent compilation cache for fine-tuning: compile a shape once per machine.

A fine-tuning run compiles a train and an eval step per batch width; a second run of the
same shapes (another seed, learning rate or epoch count, the next task of a suite with
the same model and lengths) loads them from disk instead. The default directory is the
user's cache, `$XDG_CACHE_HOME/bert_jax/xla` (else `~/.cache/bert_jax/xla`); the
environment variable BERT_JAX_COMPILATION_CACHE or a run's `compilation_cache_dir`
moves it, and "none" turns it off. Entries are keyed by XLA on the program, the
compiler options and the devices, so a stale entry is never used for a changed program.
"""
from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

ENV = "BERT_JAX_COMPILATION_CACHE"
# Cache hits and misses of this process so far (JAX's monitoring events), to tell a cold
# compilation from a load.
EVENTS = {"/jax/compilation_cache/cache_hits": 0, "/jax/compilation_cache/cache_misses": 0}


def _count(event: str, **_) -> None:
  if event in EVENTS:
    EVENTS[event] += 1


jax.monitoring.register_event_listener(_count)


def hits_and_misses() -> tuple[int, int]:
  return (EVENTS["/jax/compilation_cache/cache_hits"],
          EVENTS["/jax/compilation_cache/cache_misses"])
OFF = ("none", "")


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "bert_jax", "xla")


def resolve(setting: str | None) -> str | None:
  """The cache directory for `setting` (None: the environment's, else the default;
  "none": no cache)."""
  if setting is None:
    setting = os.environ.get(ENV)
  if setting is None:
    return default_dir()
  if setting.strip().lower() in OFF:
    return None
  return os.path.abspath(os.path.expanduser(setting))


def configure(setting: str | None) -> str | None:
  """Points this process's JAX at the cache `setting` resolves to; returns the directory
  (None when off). Every compilation is cached, not only those over a second: a
  fine-tuning run's eval steps of a small model compile in less."""
  directory = resolve(setting)
  if directory == jax.config.jax_compilation_cache_dir:
    return directory
  jax_cache.reset_cache()  # a cache already opened in this process keeps its directory
  if directory is None:
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise ValueError(f"compilation_cache_dir={directory}: cannot create it ({e}); pass another "
                     "directory or none") from e
  jax_cache.set_cache_dir(directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return directory
