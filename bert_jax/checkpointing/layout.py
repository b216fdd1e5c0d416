"""What a checkpoint is on disk, how it fails, and how two trees are compared: the leaf
that the manager (`manager.py`) and the readers of parameters (`init_from.py`) share.

Layout: WORKDIR/checkpoints/<step>/ holds three Orbax items:
  state  the train state (params, opt_state, step, rng) as sharded arrays;
  meta   JSON: the config that made it, the tokenizer's identity, the data directory,
         the number of processes, and the loop's host state (the metrics window not
         yet logged, the unigram-baseline counts);
  data   JSON per process (process_I-of-N.json): that host's data-iterator state.
Damaged checkpoints are moved to WORKDIR/checkpoints_damaged/.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

CHECKPOINTS_SUBDIR = "checkpoints"
DAMAGED_SUBDIR = "checkpoints_damaged"
FORMAT_VERSION = 1
STATE, META, DATA = "state", "meta", "data"

# At most this many mismatch lines in an error; the rest are counted.
_SHOWN_MISMATCHES = 40


class CheckpointError(ValueError):
  """A checkpoint that cannot be used; the message names it."""


class IncompatibleCheckpointError(CheckpointError):
  """A checkpoint of another model shape, vocabulary or optimizer."""
  # Its message lists the mismatched arrays one a line; launch/cli.py prints them so.
  keeps_lines = True


def mismatches(saved: Mapping[str, Any], expected: Mapping[str, Any], *,
               check_dtype: bool) -> list[str]:
  """Every difference between two {name: shape/dtype-bearing leaf} tables, one line each."""
  lines = []
  for name in sorted(set(saved) | set(expected)):
    if name not in saved:
      lines.append(f"{name}: missing from the checkpoint (this run has "
                   f"{tuple(expected[name].shape)} {np.dtype(expected[name].dtype)})")
    elif name not in expected:
      lines.append(f"{name}: in the checkpoint {tuple(saved[name].shape)}, not in this run")
    else:
      s, e = saved[name], expected[name]
      if tuple(s.shape) != tuple(e.shape) or (
          check_dtype and np.dtype(s.dtype) != np.dtype(e.dtype)):
        lines.append(f"{name}: checkpoint {tuple(s.shape)} {np.dtype(s.dtype)}, this run "
                     f"{tuple(e.shape)} {np.dtype(e.dtype)}")
  return lines


def incompatible_error(where: str, lines: list[str], hint: str) -> IncompatibleCheckpointError:
  """The error for `mismatches` lines of the checkpoint `where`, ending with `hint`."""
  shown = lines[:_SHOWN_MISMATCHES]
  more = (f"\n  ... and {len(lines) - _SHOWN_MISMATCHES} more"
          if len(lines) > _SHOWN_MISMATCHES else "")
  return IncompatibleCheckpointError(
      f"{where} does not fit this run's model: {len(lines)} mismatched array(s):\n  "
      + "\n  ".join(shown) + more + f"\n{hint}")


def teacher_mismatch_error(where: str, saved: Mapping[str, Any] | None,
                           current: Mapping[str, Any] | None) -> IncompatibleCheckpointError:
  """A distillation checkpoint resumed with another teacher (or none), or a plain
  checkpoint resumed as a distillation: `saved` / `current` are {"path", "fingerprint"}
  or None."""
  def said(t):
    if not t:
      return "no teacher"
    return f"teacher {t.get('path')} (fingerprint {str(t.get('fingerprint'))[:16]}...)"
  return IncompatibleCheckpointError(
      f"checkpoint {where} was trained with {said(saved)}, this run has {said(current)}: "
      "resuming would change what the student imitates. Resume with the original "
      "config.distill.teacher, or start a new run (another --workdir) with "
      f"--config.init_from={where}")
