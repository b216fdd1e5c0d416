"""The quickstart dataset: standard-library prose -> SentencePiece -> prepared shards.

Needs no download and no user input, so `python -m launch.pretrain` can train the tiny model
on any machine. Layout under `output_dir`: corpus/ (text), tokenizer/ (spm.model), data/
(the prepared dataset to pass as `LoaderConfig.data_dir`), quickstart.json (what was made).
Processes that share `output_dir` (the processes of a multi-host job, one workdir) make it
once: one prepares, the others wait for it (`prepare_once`).
"""
from __future__ import annotations

import json
import os
import sys
import time

from data_pipeline import corpus as corpus_lib
from data_pipeline import fileio
from data_pipeline.default_corpus import corpus_root, write_default_corpus
from data_pipeline.prepare_once import Timing, prepare_once
from data_pipeline.prepare import FORMAT_VERSION, MANIFEST, PrepareOptions, prepare
from data_pipeline.text.tokenizer import train_sentencepiece

_STAMP = "quickstart.json"


def prepare_default_dataset(output_dir: str, vocab_size: int = 8192,
                            eval_fraction: float = 0.05, num_workers: int | None = None,
                            progress: bool = True, wait_timeout_s: float = 3600.0) -> str:
  """Makes (or reuses) the quickstart dataset; returns its data_dir.

  Reuses a finished one made with the same settings by the same Python (the corpus is that
  Python's standard library, or the tree BERT_JAX_DEFAULT_CORPUS_ROOT names). Takes ~30-60 s
  on 2 cores the first time. Several processes may call this for one `output_dir` at once:
  one prepares, the others wait for it (PreparationWaitError after `wait_timeout_s` s).
  """
  settings = {"vocab_size": vocab_size, "eval_fraction": eval_fraction,
              "python": sys.version.split()[0], "stdlib": sys.prefix, "version": 2,
              "format_version": FORMAT_VERSION}
  if corpus_root() != corpus_root(default=True):
    settings["corpus_root"] = corpus_root()
  data_dir = os.path.join(output_dir, "data")
  stamp = os.path.join(output_dir, _STAMP)

  def is_done():
    if not (os.path.exists(stamp) and os.path.exists(os.path.join(data_dir, MANIFEST))):
      return False
    with open(stamp) as f:
      return json.load(f).get("settings") == settings

  start = time.time()
  log = (lambda msg: print(f"quickstart data: {msg} ({time.time() - start:.0f}s)",
                           file=sys.stderr, flush=True)) if progress else (lambda msg: None)

  def make():
    files = write_default_corpus(os.path.join(output_dir, "corpus"))
    size = sum(os.path.getsize(f) for f in files)
    log(f"wrote the standard-library corpus, {size / 1e6:.1f} MB")
    # Tokenizer processes pay off for the standard library's few MB, not for less.
    workers = (num_workers if num_workers is not None else
               min(os.cpu_count() or 1, 4) if size > 1_000_000 else 0)
    sentences = (s for doc in corpus_lib.iter_text_documents(files) for s in doc.sentences)
    model = train_sentencepiece(sentences, os.path.join(output_dir, "tokenizer"),
                                vocab_size=vocab_size, max_sentences=300_000)
    log(f"trained a {vocab_size}-piece SentencePiece tokenizer")
    if os.path.exists(os.path.join(data_dir, "prepare_state.json")):
      # A new tokenizer (new identity) cannot resume the old shards: start that part afresh.
      import shutil
      shutil.rmtree(data_dir)
    prepare(data_dir, model, inputs=",".join(files), options=PrepareOptions(
        num_workers=workers, eval_fraction=eval_fraction, docs_per_shard=500,
        progress=progress))
    # The mark that the others wait for: written last, whole.
    fileio.write_text_atomic(stamp, json.dumps({"settings": settings, "data_dir": "data"}),
                             private=True)
    log("prepared train and eval shards")
    return data_dir

  return prepare_once(output_dir, is_done, make, lambda: data_dir, what="quickstart data",
                      timing=Timing(wait_timeout_s=wait_timeout_s),
                      log=lambda msg: log(msg.split(": ", 1)[-1]))
