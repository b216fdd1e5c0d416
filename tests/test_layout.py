"""The test tree's own rules (tests/README.md): what several test modules need lives in
tests/helpers, so no test module imports another, and every folder is a package (two
files may then share a name)."""
import ast
import os

from tests.helpers import REPO

TESTS = os.path.join(REPO, "tests")


def _test_modules():
  for root, dirs, files in os.walk(TESTS):
    dirs[:] = [d for d in dirs if d not in ("data", "__pycache__")]
    for name in files:
      if name.startswith("test_") and name.endswith(".py"):
        yield os.path.join(root, name)


def _imported(path):
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_test_module_imports_another():
  offending = [f"{os.path.relpath(path, REPO)} imports {name}"
               for path in _test_modules() for name in _imported(path)
               if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")]
  assert not offending, "\n".join(offending)


def test_every_test_folder_is_a_package():
  missing = sorted(os.path.relpath(os.path.dirname(p), REPO) for p in _test_modules()
                   if not os.path.exists(os.path.join(os.path.dirname(p), "__init__.py")))
  assert not missing, sorted(set(missing))
