"""Corpus -> tokenized, sharded array_record documents plus a manifest. Streaming, parallel,
resumable. The shard layout (token pages plus a sentence index) is in records.py.

The document stream is cut into *units* of `docs_per_shard` consecutive documents. Unit k
becomes `train-k.array_record` and `eval-k.array_record` (a document goes to eval when a
hash of its position in the stream falls under `eval_fraction`, so the split does not depend
on worker count). A unit is finished when its `unit-k.json` exists (written last, after the
shards are renamed into place); a rerun re-reads the corpus but skips tokenizing finished
units. Memory is bounded by one unit plus a fixed window of in-flight worker tasks.
"""
from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator

import numpy as np

from data_pipeline import corpus as corpus_lib
from data_pipeline import records
from data_pipeline.fileio import write_text_atomic
from data_pipeline.tokenizers import Tokenizer, load_tokenizer

MANIFEST = "manifest.json"
FORMAT = "bert-jax-tokenized-documents"
FORMAT_VERSION = 2  # 2: token pages (records.py); 1 had one record per document.
SPLITS = ("train", "eval")
_DOCS_PER_TASK = 64
_TASKS_IN_FLIGHT_PER_WORKER = 4


class PrepareError(ValueError):
  """The output directory or the settings are inconsistent with a requested prepare."""


def _stream_hash01(seed: int, ordinal: int) -> float:
  """A fixed pseudo-random number in [0, 1) for document `ordinal` (splitmix64)."""
  x = (seed * 0x9E3779B97F4A7C15 + ordinal + 1) & 0xFFFFFFFFFFFFFFFF
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
  return ((x ^ (x >> 31)) >> 11) / float(1 << 53)


# --- worker side -------------------------------------------------------------------------

_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer_path: str, lowercase) -> None:
  global _WORKER_TOKENIZER
  _WORKER_TOKENIZER = load_tokenizer(tokenizer_path, lowercase=lowercase)


def _tokenize_task(task):
  """[(source, sentences)] -> ([(tokens, sentence lengths) or None], skip counts)."""
  docs, max_sentence_tokens, token_dtype = task
  tokenizer = _WORKER_TOKENIZER
  flat = [s for _, sentences in docs for s in sentences]
  encoded = tokenizer.encode_batch(flat)
  skips = corpus_lib.SkipLog()
  out, k = [], 0
  for source, sentences in docs:
    pieces = []
    for ids in encoded[k:k + len(sentences)]:
      if not ids:
        skips.add("sentence_empty_after_tokenization", source)
        continue
      if len(ids) > max_sentence_tokens:
        # A very long "sentence" (a paragraph without punctuation, a table) would always be
        # truncated to one sequence; splitting it keeps its text usable.
        skips.add("note_long_sentence_split", source)
        pieces.extend(np.asarray(ids[i:i + max_sentence_tokens])
                      for i in range(0, len(ids), max_sentence_tokens))
      else:
        pieces.append(np.asarray(ids))
    k += len(sentences)
    if not pieces:
      skips.add("document_empty_after_tokenization", source)
      out.append(None)
      continue
    if len(pieces) == 1:
      skips.add("note_one_sentence_document", source)  # Kept: usable with a random B.
    lengths = np.array([len(p) for p in pieces], dtype=np.int32)
    out.append((np.concatenate(pieces).astype(token_dtype), lengths))
  return out, skips.to_json()


# --- main side ---------------------------------------------------------------------------

class _Progress:
  def __init__(self, enabled: bool):
    self.enabled = enabled
    self.start = time.time()
    self.last = 0.0
    self.docs = 0
    self.bytes = 0
    self.tty = sys.stderr.isatty()

  def update(self, docs: int, num_bytes: int, final: bool = False) -> None:
    self.docs += docs
    self.bytes += num_bytes
    now = time.time()
    if not self.enabled or (not final and now - self.last < (0.5 if self.tty else 10.0)):
      return
    self.last = now
    dt = max(now - self.start, 1e-9)
    line = (f"prepare: {self.docs:,} docs  {self.bytes / 1e6:,.1f} MB  "
            f"{self.docs / dt:,.0f} docs/s  {self.bytes / 1e6 / dt:,.2f} MB/s  {dt:,.0f}s")
    sys.stderr.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
    sys.stderr.flush()


def _fingerprint(settings: dict) -> str:
  return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _unit_done_path(output_dir: str, unit: int) -> str:
  return os.path.join(output_dir, f"unit-{unit:05d}.json")


class _UnitWriter:
  """Accumulates one unit's documents into its train and eval shards."""

  def __init__(self, output_dir: str, unit: int, vocab_size: int, token_dtype: np.dtype):
    self.output_dir, self.unit = output_dir, unit
    self.writers, self.stats = {}, {}
    for split in SPLITS:
      path = os.path.join(output_dir, f"{split}-{unit:05d}.array_record")
      self.writers[split] = records.PageWriter(path + ".tmp", token_dtype)
      self.stats[split] = {"counts": [], "lengths": [],
                           "tokens": np.zeros(vocab_size, dtype=np.int64)}
    self.skips = corpus_lib.SkipLog()

  def add(self, split: str, tokens: np.ndarray, lengths: np.ndarray) -> None:
    self.writers[split].write(tokens)
    stats = self.stats[split]
    stats["counts"].append(len(lengths))
    stats["lengths"].append(lengths)
    stats["tokens"] += np.bincount(tokens, minlength=len(stats["tokens"]))

  def finish(self, num_input_docs: int, num_bytes: int) -> dict:
    summary = {"unit": self.unit, "input_documents": num_input_docs, "input_bytes": num_bytes,
               "splits": {}, "skipped": None}
    for split in SPLITS:
      self.writers[split].close()
      base = os.path.join(self.output_dir, f"{split}-{self.unit:05d}")
      stats = self.stats[split]
      lengths = np.concatenate(stats["lengths"]) if stats["lengths"] else np.zeros(0, np.int32)
      records.write_index(base + ".index.npz", np.array(stats["counts"], np.int32), lengths,
                          stats["tokens"])
      os.replace(base + ".array_record.tmp", base + ".array_record")
      summary["splits"][split] = {"shard": os.path.basename(base + ".array_record"),
                                  "documents": len(stats["counts"]),
                                  "sentences": int(lengths.size),
                                  "tokens": int(lengths.sum())}
    summary["skipped"] = self.skips.to_json()
    write_text_atomic(_unit_done_path(self.output_dir, self.unit), json.dumps(summary))
    return summary


def _units(docs: Iterator[corpus_lib.Document], docs_per_shard: int):
  unit, batch = 0, []
  for doc in docs:
    batch.append(doc)
    if len(batch) == docs_per_shard:
      yield unit, batch
      unit, batch = unit + 1, []
  if batch:
    yield unit, batch


def prepare(output_dir: str, tokenizer_path: str, inputs: str | None = None,
            tfds_name: str | None = None, tfds_data_dir: str | None = None,
            tfds_split: str = "train", text_format: str = "bert", num_workers: int = 0,
            eval_fraction: float = 0.01, docs_per_shard: int = 20_000,
            max_sentence_tokens: int = 256, lowercase: bool | None = None, seed: int = 0,
            progress: bool = True) -> dict:
  """Tokenizes a corpus into `output_dir`; returns the manifest (also in manifest.json).

  Exactly one of `inputs` (comma-separated globs of local text) and `tfds_name`
  ('name[/config][:version]:feature') selects the corpus. `num_workers=0` tokenizes in this
  process. Rerunning with the same settings resumes (finished units are not redone); with
  different settings into the same directory is an error.
  """
  if (inputs is None) == (tfds_name is None):
    raise PrepareError("give exactly one of inputs (local text globs) or tfds_name")
  if not 0.0 <= eval_fraction < 1.0:
    raise PrepareError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
  tokenizer = load_tokenizer(tokenizer_path, lowercase=lowercase)
  token_dtype = records.token_dtype_for(tokenizer.vocab_size)
  if inputs is not None:
    files = corpus_lib.expand_inputs(inputs)
    source_desc = {"files": [[f, os.path.getsize(f)] for f in files], "format": text_format}
  else:
    source_desc = {"tfds": tfds_name, "split": tfds_split}
  settings = {"format_version": FORMAT_VERSION, "tokenizer": tokenizer.identity,
              "source": source_desc, "eval_fraction": eval_fraction, "seed": seed,
              "docs_per_shard": docs_per_shard, "max_sentence_tokens": max_sentence_tokens,
              "page_tokens": records.PAGE_TOKENS}
  fingerprint = _fingerprint(settings)
  os.makedirs(output_dir, exist_ok=True)
  state_path = os.path.join(output_dir, "prepare_state.json")
  if os.path.exists(state_path):
    with open(state_path) as f:
      previous = json.load(f)
    if previous.get("fingerprint") != fingerprint:
      raise PrepareError(
          f"{output_dir} holds data prepared with different settings or inputs "
          f"(fingerprint {previous.get('fingerprint')} != {fingerprint}); use a new "
          f"output directory or delete it")
    if os.path.exists(os.path.join(output_dir, MANIFEST)):
      return read_manifest(output_dir)
  else:
    with open(state_path, "w") as f:
      json.dump({"fingerprint": fingerprint, "settings": settings}, f, indent=1)

  tokenizer_file = os.path.basename(tokenizer.save(output_dir))
  np.save(os.path.join(output_dir, "word_start.npy"), tokenizer.word_start_table())

  read_skips = corpus_lib.SkipLog()
  if inputs is not None:
    docs = corpus_lib.iter_text_documents(files, text_format, read_skips)
  else:
    docs = corpus_lib.iter_tfds_documents(tfds_name, tfds_data_dir, tfds_split, read_skips)

  bar = _Progress(progress)
  pool = None
  if num_workers > 0:
    pool = multiprocessing.get_context("spawn").Pool(
        num_workers, initializer=_init_worker, initargs=(tokenizer.path, lowercase))
  else:
    _init_worker(tokenizer.path, lowercase)
  summaries = []
  ordinal = 0
  try:
    for unit, batch in _units(docs, docs_per_shard):
      num_bytes = sum(d.num_bytes for d in batch)
      done = _unit_done_path(output_dir, unit)
      if os.path.exists(done):
        with open(done) as f:
          summaries.append(json.load(f))
        ordinal += len(batch)
        bar.update(len(batch), num_bytes)
        continue
      writer = _UnitWriter(output_dir, unit, tokenizer.vocab_size, token_dtype)
      tasks = [([(d.source, d.sentences) for d in batch[i:i + _DOCS_PER_TASK]],
                max_sentence_tokens, token_dtype)
               for i in range(0, len(batch), _DOCS_PER_TASK)]
      results = _run_tasks(pool, tasks, num_workers)
      for task, (outs, skip_json) in zip(tasks, results):
        writer.skips.merge(corpus_lib.SkipLog.from_json(skip_json))
        for out in outs:
          split = "eval" if _stream_hash01(seed, ordinal) < eval_fraction else "train"
          ordinal += 1
          if out is not None:
            writer.add(split, out[0], out[1])
        bar.update(len(task[0]), sum(len(s.encode()) + 1 for _, ss in task[0] for s in ss))
      summaries.append(writer.finish(len(batch), num_bytes))
  finally:
    if pool is not None:
      pool.terminate()
  bar.update(0, 0, final=True)
  manifest = _write_manifest(output_dir, tokenizer, tokenizer_file, token_dtype, summaries,
                             read_skips, settings, time.time() - bar.start, num_workers)
  return manifest


def _run_tasks(pool, tasks, num_workers):
  """Ordered results with a bounded number of tasks in flight (Pool.imap would queue all)."""
  if pool is None:
    yield from (_tokenize_task(t) for t in tasks)
    return
  window = collections.deque()
  limit = max(1, num_workers * _TASKS_IN_FLIGHT_PER_WORKER)
  for task in tasks:
    window.append(pool.apply_async(_tokenize_task, (task,)))
    if len(window) >= limit:
      yield window.popleft().get()
  while window:
    yield window.popleft().get()


def _write_manifest(output_dir, tokenizer, tokenizer_file, token_dtype, summaries, read_skips,
                    settings, seconds, num_workers) -> dict:
  skips = read_skips
  splits = {}
  for split in SPLITS:
    shards, counts = [], []
    token_counts = np.zeros(tokenizer.vocab_size, np.int64)
    for s in summaries:
      entry = s["splits"][split]
      shards.append(entry["shard"])
      counts.append(entry)
      index = records.read_index(os.path.join(output_dir, entry["shard"].replace(
          ".array_record", ".index.npz")))
      token_counts += index["token_counts"]
    maskable = token_counts.copy()
    maskable[list(tokenizer.special_ids.values())] = 0
    total = int(maskable.sum())
    splits[split] = {
        "shards": shards,
        "documents_per_shard": [c["documents"] for c in counts],
        "tokens_per_shard": [c["tokens"] for c in counts],
        "documents": sum(c["documents"] for c in counts),
        "sentences": sum(c["sentences"] for c in counts),
        "tokens": sum(c["tokens"] for c in counts),
        # Accuracy of always predicting the most frequent token: the floor MLM accuracy
        # must clear to show learning (masked positions are a uniform sample of tokens).
        "unigram_baseline_accuracy": float(maskable.max() / total) if total else 0.0,
        "most_frequent_token_id": int(maskable.argmax()) if total else -1,
    }
  for s in summaries:
    skips.merge(corpus_lib.SkipLog.from_json(s["skipped"]))
  input_bytes = sum(s["input_bytes"] for s in summaries)
  manifest = {
      "format": FORMAT, "format_version": FORMAT_VERSION,
      "tokenizer": tokenizer.describe(), "tokenizer_file": tokenizer_file,
      "vocab_size": tokenizer.vocab_size, **tokenizer.special_ids,
      "token_dtype": token_dtype.name,
      "page_tokens": records.PAGE_TOKENS,
      "splits": splits,
      "input_documents": sum(s["input_documents"] for s in summaries),
      "input_bytes": input_bytes,
      "skipped": skips.to_json(),
      "settings": settings,
      "last_run": {"seconds": round(seconds, 2), "num_workers": num_workers},
  }
  write_text_atomic(os.path.join(output_dir, MANIFEST), json.dumps(manifest, indent=1))
  return manifest


def read_manifest(data_dir: str) -> dict:
  """The manifest of a prepared dataset; a clear error when `data_dir` is not one."""
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"{data_dir}: data directory does not exist (run "
                            f"`python -m launch.prepare_data` to make one)")
  if not os.path.exists(path):
    hint = (" (prepare did not finish; rerun it to resume)"
            if os.path.exists(os.path.join(data_dir, "prepare_state.json")) else "")
    raise FileNotFoundError(f"{data_dir}: not a prepared dataset, no {MANIFEST}{hint}")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: unreadable manifest ({e})") from e
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: not a {FORMAT} manifest (format={manifest.get('format')!r})")
  if manifest.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: format version {manifest.get('format_version')} is not the "
                     f"supported {FORMAT_VERSION}; prepare the data again")
  return manifest


def unigram_baseline_accuracy(data_dir: str, split: str = "eval") -> float:
  """MLM accuracy of always guessing the split's most frequent non-special token."""
  return read_manifest(data_dir)["splits"][split]["unigram_baseline_accuracy"]
