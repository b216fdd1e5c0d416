"""Shared test helpers, imported one way everywhere: `from tests.helpers import pretrain`
(pytest puts the repository root on sys.path, see pyproject's `pythonpath`)."""
import os
import subprocess
import sys

# The repository root: subprocesses run launchers from here (`python -m launch.X`).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Real public samples (sources and licences in tests/data/README.md).
DATA = os.path.join(REPO, "tests", "data")


# XLA flags of every test process, the pytest workers (tests/conftest.py) and the launchers
# they start (processes.child_env). Tests run tiny programs for a few steps, so compiling is
# most of their time; these flags change how fast the compiled code runs, not what it
# computes (XLA's own graph passes, fusion included, still run):
# - LLVM's optimisations off: halves compile time;
# - XLA:CPU's loop emitters instead of its MLIR fusion emitters: halves it again (504 tests:
#   618 -> 477 s on two workers, tests/README.md).
# XLA aborts a process whose XLA_FLAGS name a flag it does not know, so the second, newer
# one is used only where this jaxlib knows it (asked once per test session, in a child
# process; the answer travels to workers and launchers in BERT_JAX_TEST_XLA_FLAGS).
_CHEAP_COMPILE = "--xla_backend_optimization_level=0"
_LOOP_EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _test_xla_flags() -> str:
  known = os.environ.get("BERT_JAX_TEST_XLA_FLAGS")
  if known is None:
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"], capture_output=True,
        timeout=120, check=False,
        env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=_LOOP_EMITTERS))
    known = f"{_CHEAP_COMPILE} {_LOOP_EMITTERS}" if probe.returncode == 0 else _CHEAP_COMPILE
    os.environ["BERT_JAX_TEST_XLA_FLAGS"] = known
  return known


TEST_XLA_FLAGS = _test_xla_flags()


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test process with `devices` simulated CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
