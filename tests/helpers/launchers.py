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


def _launch_modules():
  return {name: module for name, module in sys.modules.items()
          if name.startswith("launch.") and name != "launch.cli"}


def _forget(names):
  """Drops modules from sys.modules and from their package (`from launch import X` takes
  the package's attribute if it has one)."""
  for name in names:
    sys.modules.pop(name, None)
    parent, _, leaf = name.rpartition(".")
    if hasattr(sys.modules.get(parent), leaf):
      delattr(sys.modules[parent], leaf)


@contextlib.contextmanager
def loaded(module: str, args: list[str] = ()):
  """The launcher `module` imported afresh with `sys.argv` = [module, *args] (config flags
  read it when they are defined). Launchers a test module imported before (their flags may
  share its names) are set aside meanwhile; afterwards everything is as it was."""
  saved_modules = _launch_modules()
  saved_flags = {name: (flags.FLAGS[name], flags.FLAGS.find_module_defining_flag(name))
                 for name in set(flags.FLAGS)
                 if (flags.FLAGS.find_module_defining_flag(name) or "").startswith("launch.")
                 and flags.FLAGS.find_module_defining_flag(name) != "launch.cli"}
  for name in saved_flags:
    delattr(flags.FLAGS, name)
  _forget(saved_modules)
  flag_names, argv = set(flags.FLAGS), sys.argv
  sys.argv = [module, *args]
  try:
    yield importlib.import_module(module)
  finally:
    sys.argv = argv
    flags.FLAGS.unparse_flags()
    # Only the launcher's own flags go: a library first imported by it (grain defines
    # absl flags at import) keeps its flags, which it reads later in this process.
    for name in set(flags.FLAGS) - flag_names:
      if (flags.FLAGS.find_module_defining_flag(name) or "").startswith("launch."):
        delattr(flags.FLAGS, name)
    _forget(_launch_modules())
    for name, (flag, defined_in) in saved_flags.items():
      flags.FLAGS[name] = flag
      flags.FLAGS.register_flag_by_module(defined_in, flag)
    sys.modules.update(saved_modules)
    for name, mod in saved_modules.items():
      parent, _, leaf = name.rpartition(".")
      setattr(sys.modules[parent], leaf, mod)
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
