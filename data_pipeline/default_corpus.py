"""An English corpus present on every machine: the installed Python standard library's prose.

The quickstart must pretrain without a download, and nothing third-party may be copied into
the repository, so the default corpus is made on the spot from the docstrings and comments
of the standard library that runs this code. Each module becomes one document (its prose in
source order, split into sentences); the result is written in BERT's text format. The output
depends only on the installed standard library, so it is identical on every run.
BERT_JAX_DEFAULT_CORPUS_ROOT=DIR makes it from another tree of Python sources instead
(a smaller one makes a quicker quickstart, as the multi-process tests do).
"""
from __future__ import annotations

import ast
import contextlib
import io
import multiprocessing
import os
import re
import sysconfig
import tokenize

from data_pipeline import fileio
from data_pipeline.corpus import split_sentences

# Tests, vendored third-party code and codec tables are skipped: they are code, not prose.
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
              "ensurepip", "_vendor", "encodings"}  # encodings: code-page tables.
_WORD = re.compile(r"[A-Za-z]{2,}")
_MIN_WORDS = 4
_NUM_FILES = 8
_POOL_MIN_FILES = 200


def corpus_root(default: bool = False) -> str:
  """The tree of Python sources the default corpus is made from."""
  stdlib = sysconfig.get_paths()["stdlib"]
  return stdlib if default else os.environ.get("BERT_JAX_DEFAULT_CORPUS_ROOT") or stdlib


def _stdlib_files(root: str) -> list[str]:
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
  return sorted(found)


def _is_prose(paragraph: str) -> bool:
  """Keeps English-looking text: mostly letters, several words, not a doctest or code."""
  if paragraph.startswith((">>>", "...", "$ ", "%")) or "::" in paragraph[-3:]:
    return False
  letters = sum(c.isalpha() or c.isspace() for c in paragraph)
  return len(_WORD.findall(paragraph)) >= _MIN_WORDS and letters >= 0.8 * len(paragraph)


def _paragraphs(text: str) -> list[str]:
  paragraphs, current = [], []
  for line in text.splitlines():
    stripped = line.strip()
    # Indented lines inside docstrings are examples or tables, not running prose.
    if not stripped or line.startswith("        ") or stripped.startswith((">>>", "...")):
      if current:
        paragraphs.append(" ".join(current))
        current = []
      continue
    current.append(stripped)
  if current:
    paragraphs.append(" ".join(current))
  return [p for p in paragraphs if _is_prose(p)]


def _module_prose(source: str) -> list[tuple[int, str]]:
  """(line, text) blocks of docstrings and comment runs, in source order."""
  blocks = []
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return blocks
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node, clean=True)
      if doc:
        blocks.append((getattr(node, "lineno", 0), doc))
  run, run_line, last_line = [], 0, -2
  try:
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
      if tok.type != tokenize.COMMENT:
        continue
      text = tok.string.lstrip("#").strip()
      line = tok.start[0]
      if line != last_line + 1 and run:
        blocks.append((run_line, "\n".join(run)))
        run = []
      if not run:
        run_line = line
      if text and not text.startswith(("!", "-*-", "noqa", "type:", "XXX")):
        run.append(text)
      last_line = line
  except (tokenize.TokenError, SyntaxError):
    pass
  if run:
    blocks.append((run_line, "\n".join(run)))
  blocks.sort(key=lambda b: b[0])
  return blocks


def _file_sentences(path: str) -> list[str]:
  try:
    with open(path, encoding="utf-8") as f:
      source = f.read()
  except (OSError, UnicodeDecodeError):
    return []  # A handful of stdlib files use other encodings; plenty of text remains.
  sentences = []
  for _, block in _module_prose(source):
    for paragraph in _paragraphs(block):
      sentences.extend(split_sentences(paragraph))
  return sentences


def default_corpus_documents(stdlib_dir: str | None = None, num_workers: int | None = None):
  """Yields (module path, list of sentences) for every standard-library module with prose.

  Parsing the whole library takes ~15 CPU-seconds, so files are parsed by a process pool;
  `imap` keeps the output order (and so the corpus) independent of the worker count.
  """
  root = stdlib_dir or corpus_root()
  files = _stdlib_files(root)
  # Starting a pool of fresh interpreters costs seconds: worth it for the ~2000 files of
  # the standard library, not for a small tree.
  workers = num_workers or (min(os.cpu_count() or 1, 8) if len(files) > _POOL_MIN_FILES else 1)
  if workers > 1:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
      for path, sentences in zip(files, pool.imap(_file_sentences, files, chunksize=8)):
        if len(sentences) >= 2:
          yield os.path.relpath(path, root), sentences
  else:
    for path in files:
      sentences = _file_sentences(path)
      if len(sentences) >= 2:
        yield os.path.relpath(path, root), sentences


def write_default_corpus(output_dir: str, stdlib_dir: str | None = None) -> list[str]:
  """Writes the standard library's prose in BERT format into `output_dir`; returns the files.

  Documents are dealt round-robin into a few files so that prepare's workers can share them.
  Rewrites the files each time (cheap: a few seconds) and leaves nothing half-written.
  """
  os.makedirs(output_dir, exist_ok=True)
  paths = [os.path.join(output_dir, f"stdlib-{i:02d}.txt") for i in range(_NUM_FILES)]
  with contextlib.ExitStack() as renames:
    # Private names: never another process's half-written file; all renamed at the end.
    tmps = [renames.enter_context(fileio.atomic_path(p, private=True)) for p in paths]
    with contextlib.ExitStack() as files:
      handles = [files.enter_context(open(t, "w", encoding="utf-8")) for t in tmps]
      for i, (_, sentences) in enumerate(default_corpus_documents(stdlib_dir)):
        handles[i % _NUM_FILES].write("\n".join(sentences) + "\n\n")
  return paths
