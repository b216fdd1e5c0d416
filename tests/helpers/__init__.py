"""Shared test helpers, imported one way everywhere: `from tests.helpers import pretrain`
(pytest puts the repository root on sys.path, see pyproject's `pythonpath`)."""
import os

# The repository root: subprocesses run launchers from here (`python -m launch.X`).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Real public samples (sources and licences in tests/data/README.md).
DATA = os.path.join(REPO, "tests", "data")


# XLA flags of every test process, the pytest workers (tests/conftest.py) and the launchers
# they start (processes.child_env): LLVM's optimisations off. Tests run tiny programs for a
# few steps, so compiling is most of their time, and this flag halves it (tests/README.md);
# it changes how fast the compiled code runs, not what it computes (XLA's own graph passes,
# fusion included, still run).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test process with `devices` simulated CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
