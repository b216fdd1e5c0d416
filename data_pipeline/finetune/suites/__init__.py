"""Benchmark suites, text side: GLUE's and CLUE's task layouts, scores and submission files.

`get(name)` gives the suite; the runs themselves are `bert_jax.finetune.suite`'s, which
is handed a suite from here by `launch/suite.py`. Never imports jax.
"""
from __future__ import annotations

from data_pipeline.finetune.suites.base import Suite, SuiteError
from data_pipeline.finetune.suites.clue import CLUE
from data_pipeline.finetune.suites.glue import GLUE

SUITES = {"glue": GLUE, "clue": CLUE}


def get(name: str) -> Suite:
  if name.lower() not in SUITES:
    raise SuiteError(f"suite={name!r}: expected one of {', '.join(SUITES)}")
  return SUITES[name.lower()]


__all__ = ["Suite", "SuiteError", "SUITES", "get"]
