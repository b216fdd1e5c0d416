"""A launcher run in the test's own process: `python -m launch.X ARGS` without the ~3 CPU-s
of a fresh interpreter importing jax.

absl keeps its flags in one process-wide registry and every launcher defines its own, so
each run imports the launcher afresh and, afterwards, removes the flags and the `launch.*`
modules that import added (another launcher may define a flag of the same name). The
exit-status contract itself (what the shell sees) is tested with a few real processes in
tests/launch/test_cli_errors.py; everything before `sys.exit` is the same code.
"""
import contextlib
import dataclasses
import importlib
import io
import sys

from absl import app
from absl import flags

from launch import cli  # imported once, here: its --verbose flag stays defined


@dataclasses.dataclass
class Result:
  returncode: int
  stdout: str
  stderr: str

  def error_lines(self):
    return [line for line in self.stderr.splitlines() if line.startswith("error:")]


@contextlib.contextmanager
def loaded(module: str, args: list[str] = ()):
  """The launcher `module` imported afresh with `sys.argv` = [module, *args] (config flags
  read it when they are defined); its flags and modules are removed afterwards."""
  flag_names = set(flags.FLAGS)
  modules = set(sys.modules)
  argv, sys.argv = sys.argv, [module, *args]
  try:
    yield importlib.import_module(module)
  finally:
    sys.argv = argv
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - flag_names:
      delattr(flags.FLAGS, name)
    for name in set(sys.modules) - modules:
      if name.startswith("launch."):
        del sys.modules[name]
        # `from launch import X` takes the package's attribute if it has one.
        parent, _, leaf = name.rpartition(".")
        if hasattr(sys.modules.get(parent), leaf):
          delattr(sys.modules[parent], leaf)
    # absl refuses a second flag registration in one process once one succeeded.
    app._register_and_parse_flags_with_usage.done = False  # pylint: disable=protected-access


def run(module: str, args: list[str]) -> Result:
  """`python -m MODULE ARGS` through `launch.cli.run`, in this process."""
  out, err = io.StringIO(), io.StringIO()
  code = 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      with loaded(module, args) as launcher:
        cli.run(launcher.main)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  return Result(code, out.getvalue(), err.getvalue())
