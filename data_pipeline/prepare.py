"""Corpus -> tokenized, sharded array_record documents plus a manifest. Streaming, parallel,
resumable. The shard layout (token pages plus a sentence index) is in records.py.

The document stream is cut into *units* of `docs_per_shard` consecutive documents. Unit k
becomes `train-k.array_record` and `eval-k.array_record` (a document goes to eval when a
hash of its position in the stream falls under `eval_fraction`, so the split does not depend
on worker count). A unit is finished when its `unit-k.json` exists (written last, after the
shards are renamed into place); a rerun re-reads the corpus but skips tokenizing finished
units. Memory is bounded by one unit plus a fixed window of in-flight worker tasks.

Text rules (sentence splitting, line joining, NFKC; text_scripts.py) and the input
encoding are settings of the dataset. With `word_segmenter="jieba"` each token also gets a
"starts a word" flag from a Chinese word segmenter (word_segmentation.py), stored in the
token's top bit (records.py), for Chinese whole-word masking. The manifest counts the
[UNK] rate; above UNK_RATE_WARNING a warning says the vocabulary does not fit the text.
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Iterator

import numpy as np

from data_pipeline import corpus as corpus_lib
from data_pipeline import records
from data_pipeline.text import scripts as text_scripts
from data_pipeline.text import word_segmentation
from data_pipeline.fileio import write_text_atomic
from data_pipeline.text.tokenizer import Tokenizer, load_tokenizer

MANIFEST = "manifest.json"
FORMAT = "bert-jax-tokenized-documents"
# 3: optional word-start bits in the tokens, text rules, [UNK] rate; 2: token pages
# (records.py); 1: one record per document.
FORMAT_VERSION = 3
UNK_RATE_WARNING = 0.01
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
_WORKER_SEGMENTER = None


def _init_worker(tokenizer_path: str, lowercase, word_segmenter: str | None = None) -> None:
  global _WORKER_TOKENIZER, _WORKER_SEGMENTER
  _WORKER_TOKENIZER = load_tokenizer(tokenizer_path, lowercase=lowercase)
  _WORKER_SEGMENTER = (word_segmentation.load_segmenter(word_segmenter) if word_segmenter
                       else None)


def _encode(flat: list[str]) -> list[tuple[list[int], np.ndarray | None]]:
  """(ids, word-start flags or None) per sentence."""
  tokenizer, segment = _WORKER_TOKENIZER, _WORKER_SEGMENTER
  if segment is None:
    return [(ids, None) for ids in tokenizer.encode_batch(flat)]
  encoded = tokenizer.encode_with_offsets(flat)
  flags = word_segmentation.word_start_flags_batch(flat, encoded, tokenizer.word_start_table(),
                                                   segment)
  return [(ids, f) for (ids, _), f in zip(encoded, flags)]


def _tokenize_task(task):
  """[(source, sentences)] -> ([(tokens, sentence lengths, word starts) or None], skips)."""
  docs, max_sentence_tokens, token_dtype = task
  flat = [s for _, sentences in docs for s in sentences]
  encoded = _encode(flat)
  skips = corpus_lib.SkipLog()
  out, k = [], 0
  for source, sentences in docs:
    pieces, starts = [], []
    for ids, flags in encoded[k:k + len(sentences)]:
      if not ids:
        skips.add("sentence_empty_after_tokenization", source)
        continue
      if len(ids) > max_sentence_tokens:
        # A very long "sentence" (a paragraph without punctuation, a table) would always be
        # truncated to one sequence; splitting it keeps its text usable.
        skips.add("note_long_sentence_split", source)
        for i in range(0, len(ids), max_sentence_tokens):
          pieces.append(np.asarray(ids[i:i + max_sentence_tokens]))
          if flags is not None:
            starts.append(flags[i:i + max_sentence_tokens])
      else:
        pieces.append(np.asarray(ids))
        if flags is not None:
          starts.append(flags)
    k += len(sentences)
    if not pieces:
      skips.add("document_empty_after_tokenization", source)
      out.append(None)
      continue
    if len(pieces) == 1:
      skips.add("note_one_sentence_document", source)  # Kept: usable with a random B.
    lengths = np.array([len(p) for p in pieces], dtype=np.int32)
    word_starts = np.concatenate(starts) if starts else None
    out.append((np.concatenate(pieces).astype(token_dtype), lengths, word_starts))
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

  def add(self, split: str, tokens: np.ndarray, lengths: np.ndarray,
          word_starts: np.ndarray | None) -> None:
    self.writers[split].write(tokens, word_starts)
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


# `word_segmenter="auto"`: segment (jieba) when this share of the characters of the first
# documents are ideographs / kana (text_scripts.cjk_fraction), as Chinese whole-word
# masking needs; a mostly Latin corpus keeps the tokenizer's own word starts.
CJK_SEGMENT_FRACTION = 0.5
_SEGMENTER_SAMPLE_DOCS = 200
_SEGMENTER_SAMPLE_CHARS = 200_000


def choose_word_segmenter(word_segmenter: str | None, docs: Iterator[corpus_lib.Document]
                          ) -> tuple[str | None, dict, Iterator[corpus_lib.Document]]:
  """-> (segmenter or None, how it was chosen, the same documents).

  "auto" reads the first documents (they are handed back with the rest) and picks "jieba"
  when they are mostly CJK (CJK_SEGMENT_FRACTION), else none. The choice records the
  measured share in every case, so that whole-word masking can tell Chinese data
  prepared without word starts (loader.py warns).
  """
  head = list(itertools.islice(docs, _SEGMENTER_SAMPLE_DOCS))
  sample = "".join(s for d in head for s in d.sentences)[:_SEGMENTER_SAMPLE_CHARS]
  cjk = text_scripts.cjk_fraction(sample)
  choice = {"sampled_documents": len(head), "cjk_fraction": round(cjk, 4)}
  if word_segmenter == "auto":
    word_segmenter = "jieba" if cjk >= CJK_SEGMENT_FRACTION else None
    choice["reason"] = (f"auto: {cjk:.1%} of the first {len(head)} documents' characters "
                        f"are CJK ({'>=' if word_segmenter else '<'} "
                        f"{CJK_SEGMENT_FRACTION:.0%})")
  else:
    choice["reason"] = "given"
  return word_segmenter, choice, itertools.chain(head, docs)


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
            progress: bool = True, encoding: str = "utf-8",
            text_rules: text_scripts.TextRules = text_scripts.DEFAULT_RULES,
            word_segmenter: str | None = None) -> dict:
  """Tokenizes a corpus into `output_dir`; returns the manifest (also in manifest.json).

  Exactly one of `inputs` (comma-separated globs of local text) and `tfds_name`
  ('name[/config][:version]:feature') selects the corpus. `num_workers=0` tokenizes in this
  process. Rerunning with the same settings resumes (finished units are not redone); with
  different settings into the same directory is an error. `encoding` is the local files'
  text encoding; `text_rules` the splitting / normalising options; `word_segmenter`
  ("jieba") stores Chinese word starts for whole-word masking ("auto": jieba when the
  corpus is mostly CJK, `choose_word_segmenter`).
  """
  if (inputs is None) == (tfds_name is None):
    raise PrepareError("give exactly one of inputs (local text globs) or tfds_name")
  if not 0.0 <= eval_fraction < 1.0:
    raise PrepareError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
  tokenizer = load_tokenizer(tokenizer_path, lowercase=lowercase)
  read_skips = corpus_lib.SkipLog()
  if inputs is not None:
    corpus_lib.check_encoding(encoding)
    files = corpus_lib.expand_inputs(inputs)
    source_desc = {"files": [[f, os.path.getsize(f)] for f in files], "format": text_format,
                   "encoding": encoding}
    docs = corpus_lib.iter_text_documents(files, text_format, read_skips, encoding, text_rules)
  else:
    source_desc = {"tfds": tfds_name, "split": tfds_split}
    docs = corpus_lib.iter_tfds_documents(tfds_name, tfds_data_dir, tfds_split, read_skips,
                                          text_rules)
  word_segmenter, segmenter_choice, docs = choose_word_segmenter(word_segmenter, docs)
  token_dtype = records.token_dtype_for(tokenizer.vocab_size, word_segmenter is not None)
  if word_segmenter is not None:
    word_segmentation.load_segmenter(word_segmenter)  # Fails here, before any work.
  settings = {"format_version": FORMAT_VERSION, "tokenizer": tokenizer.identity,
              "source": source_desc, "eval_fraction": eval_fraction, "seed": seed,
              "docs_per_shard": docs_per_shard, "max_sentence_tokens": max_sentence_tokens,
              "page_tokens": records.PAGE_TOKENS, "text_rules": text_rules.to_json(),
              "word_segmenter": word_segmenter}
  fingerprint = _fingerprint(settings)
  # How the segmenter was chosen: recorded, but not part of what makes the data (resumes of
  # data prepared before this was recorded still match).
  settings = dict(settings, word_segmenter_choice=segmenter_choice)
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

  bar = _Progress(progress)
  pool = None
  if num_workers > 0:
    pool = multiprocessing.get_context("spawn").Pool(
        num_workers, initializer=_init_worker,
        initargs=(tokenizer.path, lowercase, word_segmenter))
  else:
    _init_worker(tokenizer.path, lowercase, word_segmenter)
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
            writer.add(split, *out)
        bar.update(len(task[0]), sum(len(s.encode()) + 1 for _, ss in task[0] for s in ss))
      summaries.append(writer.finish(len(batch), num_bytes))
  finally:
    if pool is not None:
      pool.terminate()
  bar.update(0, 0, final=True)
  manifest = _write_manifest(output_dir, tokenizer, tokenizer_file, token_dtype, summaries,
                             read_skips, settings, time.time() - bar.start, num_workers)
  if manifest["unk_rate"] > UNK_RATE_WARNING:
    warnings.warn(unk_warning(manifest, output_dir), stacklevel=2)
  return manifest


def unk_warning(manifest: dict, output_dir: str) -> str:
  return (f"{output_dir}: {manifest['unk_rate']:.1%} of the tokens are [UNK] (more than "
          f"{UNK_RATE_WARNING:.0%}): the vocabulary does not cover this text (e.g. a "
          f"vocabulary without CJK characters on Chinese text); train a tokenizer on it "
          f"with launch/train_tokenizer.py")


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
    all_tokens = int(token_counts.sum())
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
        "unk_tokens": int(token_counts[tokenizer.unk_id]),
        "unk_rate": float(token_counts[tokenizer.unk_id] / all_tokens) if all_tokens else 0.0,
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
      # Who segmented words for the tokens' word-start bits (None: the tokens carry none).
      "word_starts": settings["word_segmenter"],
      "unk_rate": (sum(s["unk_tokens"] for s in splits.values())
                   / max(sum(s["tokens"] for s in splits.values()), 1)),
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
