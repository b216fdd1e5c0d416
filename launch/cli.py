"""How every launcher ends: one `error:` line for a user's mistake, a traceback for a bug.

  if __name__ == "__main__":
    cli.run(main)          # in place of absl's app.run(main)

Exit statuses:
  0  done.
  1  an unexpected error (a bug, or a failure of the machine): its traceback is printed.
  2  a user error: a bad or missing flag, an unknown config field or a bad config value,
     a missing file or directory, bad data, an incompatible checkpoint (the ValueError /
     FileNotFoundError family the libraries raise for these, CorpusError, DataError,
     CheckpointError, ... included). One line `error: <message>` on stderr, no traceback
     (an error with `keeps_lines = True`, as an incompatible checkpoint's list of arrays,
     keeps its message's lines: an item a line); `--verbose` or BERT_JAX_VERBOSE=1 prints the traceback too.
  3  stopped because another process of the same job failed (multi-process runs; that
     process's index and reason are printed, see bert_jax/multihost/job_failure.py).
  130 interrupted (Ctrl-C).

In a multi-process job a process that ends with 1 or 2 tells the others, which stop
too (status 3) instead of waiting for it.
"""
from __future__ import annotations

import ast
import os
import re
import sys
import traceback
from typing import Callable

from absl import app
from absl import flags
from ml_collections.config_flags import config_flags as config_flags_impl

_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Print the traceback of user errors too (also: BERT_JAX_VERBOSE=1).")

USER_ERROR = 2
BUG = 1
INTERRUPTED = 130

# Raised by the libraries (and Python) for a user's mistake. CorpusError, PrepareError,
# TokenizerError, DataError and CheckpointError are ValueErrors.
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                FileExistsError, PermissionError, flags.Error, app.UsageError)
# Library errors that are not ValueErrors, by module: checked only if that module was
# imported (a launcher that never imports jax pays nothing for bert_jax's).
_NAMED_USER_ERRORS = (("bert_jax.multihost.distributed", "DistributedSetupError"),
                      ("data_pipeline.prepare_once", "PreparationWaitError"))


def user_errors() -> tuple[type[BaseException], ...]:
  named = tuple(getattr(sys.modules[m], name) for m, name in _NAMED_USER_ERRORS
                if m in sys.modules and hasattr(sys.modules[m], name))
  return _USER_ERRORS + named


def verbose(argv: list[str] | None = None) -> bool:
  if os.environ.get("BERT_JAX_VERBOSE", "").lower() in ("1", "true", "yes"):
    return True
  if flags.FLAGS.is_parsed():
    return bool(_VERBOSE.value)
  # Flags that failed to parse: look for the flag itself.
  return any(a in ("--verbose", "-verbose", "--verbose=true", "--verbose=1")
             for a in (argv or sys.argv))


def one_line(text: str) -> str:
  """A message as one line. A config file's error arrives with the traceback of its
  loading inside the message: keep its head and its last line, the error itself."""
  lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
  if not lines:
    return ""
  if any(line.startswith("Traceback (most recent call last)") for line in lines):
    head = lines[0].replace(" Error whilst parsing config file:", "").rstrip(":")
    last = re.sub(r"^[\w.]*(Error|Exception): ", "", lines[-1])
    return f"{head}: {last}"
  return " ".join(lines)


def message(error: BaseException) -> str:
  """The user-facing text of `error` (KeyError's str() is the repr of its key, which a
  locked ConfigDict sometimes wraps in an AttributeError as a string)."""
  if isinstance(error, (KeyError, AttributeError)) and error.args:
    text = str(error.args[0])
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
      try:
        text = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        pass
    return text
  if isinstance(error, OSError) and error.filename is not None and error.strerror:
    return f"{error.strerror}: {error.filename}"
  return str(error) or type(error).__name__


def _stop(status: int, reason: str) -> None:
  """Leaves with `status`; in a multi-process job tells the other processes first."""
  job_failure = sys.modules.get("bert_jax.multihost.job_failure")
  if job_failure is not None and job_failure.active():
    job_failure.fail_job(status, reason)  # does not return
  sys.exit(status)


def _user_error(text: str, error: BaseException | None, argv=None) -> None:
  if error is not None and verbose(argv):
    traceback.print_exception(type(error), error, error.__traceback__)
  line = one_line(text)
  if getattr(error, "keeps_lines", False):
    # A list (an incompatible checkpoint's mismatched arrays) is read one item a line:
    # joined, six shapes on one line are a puzzle. The first line still says it all.
    lines = [ln.rstrip() for ln in str(text).strip().splitlines() if ln.strip()]
    print("error: " + "\n".join(lines), file=sys.stderr, flush=True)
  else:
    print(f"error: {line}", file=sys.stderr, flush=True)
  _stop(USER_ERROR, line)


def _config_flags():
  return [f for f in flags.FLAGS._flags().values()  # pylint: disable=protected-access
          if config_flags_impl.is_config_flag(f)]


def _failing_override(argv: list[str], key: str) -> str | None:
  """The --config.a.b=... argument that names the unknown field `key`."""
  key = key.strip().splitlines()[0].strip("'\"")
  for flag in _config_flags():
    for arg in argv:
      m = re.match(rf"^--?(no)?{re.escape(flag.name)}\.([\w.]+)", arg)
      if m and key in m.group(2).split("."):
        return arg
  return None


def _moved(arg: str | None, field: str) -> str | None:
  """"config.OLD is now config.NEW" when `arg` overrides a field under its old name (the
  config files import bert_jax.configs.common, so a config flag has loaded it)."""
  common = sys.modules.get("bert_jax.configs.common")
  if arg is None or common is None:
    return None
  m = re.match(r"^--?(\w+)\.([\w.]+)", arg)
  new = common.moved_field(m.group(2)) if m else None
  if new is None:
    return None
  flag = m.group(1)
  return f"{arg}: config.{m.group(2)} is now config.{new} (--{flag}.{new}=...)"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its errors (and a config file's) as one `error:` line,
  exit status 2."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _user_error(str(e), e, argv)
  except (KeyError, AttributeError) as e:
    # A locked config: an override of a field it does not have. The message is the
    # field's name, then perhaps a line "Did you mean ...".
    field, _, hint = message(e).partition("\n")
    arg = _failing_override(argv, field)
    hint = f"; {one_line(hint)}" if hint.strip() else ""
    _user_error(_moved(arg, field)
                or f"{arg or 'config override'}: the config has no field {field}{hint}", e, argv)
  except (OSError, ValueError, TypeError) as e:
    _user_error(message(e), e, argv)
  for flag in _config_flags():
    if flag.value is None:
      continue
    try:
      getattr(flag.value, "lock", None)  # a config file that failed to load raises here
    except OSError as e:
      # "... failed to load: ... Attempted [paths] ... [Errno 2] No such file ...": the
      # last line says what went wrong.
      last = re.sub(r"^\[Errno \d+\] ", "", str(e).strip().splitlines()[-1].strip())
      _user_error(f"--{flag.name}={flag.serialize().split('=', 1)[-1]}: cannot load the "
                  f"config file: {last}", e, argv)
  return rest


def _guarded(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
  def wrapped(argv):
    try:
      status = main(argv)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      if code and not isinstance(e.code, int):
        print(e.code, file=sys.stderr, flush=True)
      if code:
        _stop(code, f"exited with status {code}")
      raise
    except KeyboardInterrupt:
      print("error: interrupted", file=sys.stderr, flush=True)
      _stop(INTERRUPTED, "interrupted (KeyboardInterrupt)")
    except user_errors() as e:
      _user_error(message(e), e)
    except Exception as e:  # pylint: disable=broad-except
      from bert_jax.multihost import job_failure  # pylint: disable=import-outside-toplevel
      job_failure.stop_if_a_peer_failed()  # the error is the failed peer's doing
      traceback.print_exc()
      sys.stderr.flush()
      _stop(BUG, job_failure.describe(e))
    if status:
      _stop(int(status), f"exited with status {status}")
    return status

  return wrapped


def run(main: Callable[[list[str]], int | None]) -> None:
  """absl's `app.run(main)` with the exit statuses and messages above."""
  app.run(_guarded(main), flags_parser=parse_flags)
