"""Test-wide setup: 8 simulated CPU devices, set before jax is first imported.

Every test sees the same 8-device CPU platform; single-device tests simply use
the default device. Multi-device tests build their own meshes over
`jax.devices()`.
"""
import atexit
import os
import shutil
import tempfile

from tests.helpers import TEST_XLA_FLAGS, xla_flags

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " " + xla_flags(8)).strip()
elif TEST_XLA_FLAGS not in _flags:
  os.environ["XLA_FLAGS"] = f"{_flags} {TEST_XLA_FLAGS}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests make their own small data and never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One persistent compilation cache per test session, new and empty: the same program
# compiled by several tests (the same tiny model's steps, init and export, in-process and
# in the launchers the tests start) compiles once. The session's first process (pytest's
# controller) makes it and removes it at exit; its workers and their subprocesses inherit
# it. Nothing depends on what an earlier session or the user's cache holds, and a loaded
# executable is the one compiled. Fine-tuning tests pin `length_buckets=1` (the cost model
# that chooses widths reads the compile times recorded in this cache) except those about
# the choice, which give their own cache directory.
if "BERT_JAX_COMPILATION_CACHE" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="bert_jax_test_xla_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ.update(BERT_JAX_COMPILATION_CACHE=_cache, JAX_COMPILATION_CACHE_DIR=_cache,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


# The longest files first: pytest-xdist hands whole files to the workers in collection
# order (pyproject's --no-loadscope-reorder: its default would put the files with the most
# tests first, and these one-test multi-process jobs last, running alone at the end while
# the other worker sits idle).
_LONGEST_FIRST = ("test_job_failure.py", "test_multiprocess.py", "test_pretraining_loop.py",
                  "test_distill.py", "test_peft.py", "test_resume.py", "test_cli_errors.py")


def pytest_collection_modifyitems(session, config, items):
  def rank(item):
    name = item.path.name
    return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)
  items[:] = sorted(items, key=rank)  # stable: the order inside each group is kept
