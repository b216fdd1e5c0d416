"""Test-wide setup: 8 simulated CPU devices, set before jax is first imported.

Every test sees the same 8-device CPU platform; single-device tests simply use
the default device. Multi-device tests build their own meshes over
`jax.devices()`.
"""
import os

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
# No persistent compilation cache unless a test asks for one: results never depend on
# what an earlier run left in the user's cache.
os.environ.setdefault("BERT_JAX_COMPILATION_CACHE", "none")


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
