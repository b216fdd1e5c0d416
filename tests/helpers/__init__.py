"""Shared test helpers, imported one way everywhere: `from tests.helpers import pretrain`
(pytest puts the repository root on sys.path, see pyproject's `pythonpath`)."""
