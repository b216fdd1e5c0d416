"""Shared test helpers, imported one way everywhere: `from tests.helpers import pretrain`
(pytest puts the repository root on sys.path, see pyproject's `pythonpath`)."""
import os

# The repository root: subprocesses run launchers from here (`python -m launch.X`).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Real public samples (sources and licences in tests/data/README.md).
DATA = os.path.join(REPO, "tests", "data")
