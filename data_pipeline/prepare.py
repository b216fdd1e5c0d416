"""Corpus -> tokenized, sharded array_record documents plus a manifest. Streaming, parallel,
resumable. The shard layout (token pages plus a sentence index) is in records.py.

The document stream is cut into *units* of `docs_per_shard` consecutive documents. Unit k
becomes `train-k.array_record` and `eval-k.array_record` (a document goes to eval when a
hash of its position in the stream falls under `eval_fraction`, so the split does not depend
on worker count). A unit is finished when its `unit-k.json` exists (written last, after the
shards are renamed into place); a rerun re-reads the corpus but skips tokenizing finished
units. Memory is bounded by one unit plus a fixed window of in-flight worker tasks.

Text rules (sentence splitting, line joining, NFKC; text/scripts.py) and the input
encoding are settings of the dataset. With `word_segmenter="jieba"` each token also gets a
"starts a word" flag from a Chinese word segmenter (word_segmentation.py), stored in the
token's top bit (records.py), for Chinese whole-word masking. The manifest counts the
[UNK] rate; above UNK_RATE_WARNING a warning says the vocabulary does not fit the text.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
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
from data_pipeline import fileio
from data_pipeline import records
from data_pipeline.text import scripts as text_scripts
from data_pipeline.text import word_segmentation
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
    # The shards are renamed into place when the unit finishes (`finish`).
    self._shards = contextlib.ExitStack()
    for split in SPLITS:
      path = os.path.join(output_dir, f"{split}-{unit:05d}.array_record")
      tmp = self._shards.enter_context(fileio.atomic_path(path))
      self.writers[split] = records.PageWriter(tmp, token_dtype)
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
      summary["splits"][split] = {"shard": os.path.basename(base + ".array_record"),
                                  "documents": len(stats["counts"]),
                                  "sentences": int(lengths.size),
                                  "tokens": int(lengths.sum())}
    self._shards.close()
    summary["skipped"] = self.skips.to_json()
    fileio.write_text_atomic(_unit_done_path(self.output_dir, self.unit), json.dumps(summary))
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


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How a corpus is read, tokenized and sharded (all but `num_workers` and `progress` are
  settings of the dataset: a rerun must repeat them to resume)."""
  text_format: str = "bert"          # local files: corpus.py's formats
  encoding: str = "utf-8"            # local files' text encoding
  tfds_data_dir: str | None = None
  tfds_split: str = "train"
  text_rules: text_scripts.TextRules = text_scripts.DEFAULT_RULES  # splitting / normalising
  lowercase: bool | None = None      # WordPiece casing (None: the vocabulary's own)
  word_segmenter: str | None = None  # "jieba": store Chinese word starts (whole-word
                                     # masking); "auto": jieba when mostly CJK
  eval_fraction: float = 0.01
  docs_per_shard: int = 20_000
  max_sentence_tokens: int = 256
  seed: int = 0
  num_workers: int = 0               # 0: tokenize in this process
  progress: bool = True


def prepare(output_dir: str, tokenizer_path: str, inputs: str | None = None,
            tfds_name: str | None = None,
            options: PrepareOptions = PrepareOptions()) -> dict:
  """Tokenizes a corpus into `output_dir`; returns the manifest (also in manifest.json).

  Exactly one of `inputs` (comma-separated globs of local text) and `tfds_name`
  ('name[/config][:version]:feature') selects the corpus. Rerunning with the same settings
  resumes (finished units are not redone); with different settings into the same directory
  is an error. `options.word_segmenter="auto"` segments (jieba) when the corpus is mostly
  CJK (`choose_word_segmenter`).
  """
  o = options
  if (inputs is None) == (tfds_name is None):
    raise PrepareError("give exactly one of inputs (local text globs) or tfds_name")
  if not 0.0 <= o.eval_fraction < 1.0:
    raise PrepareError(f"eval_fraction must be in [0, 1), got {o.eval_fraction}")
  tokenizer = load_tokenizer(tokenizer_path, lowercase=o.lowercase)
  read_skips = corpus_lib.SkipLog()
  files = None
  if inputs is not None:
    corpus_lib.check_encoding(o.encoding)
    files = corpus_lib.expand_inputs(inputs)
    docs = corpus_lib.iter_text_documents(files, o.text_format, read_skips, o.encoding,
                                          o.text_rules)
  else:
    docs = corpus_lib.iter_tfds_documents(tfds_name, o.tfds_data_dir, o.tfds_split, read_skips,
                                          o.text_rules)
  word_segmenter, segmenter_choice, docs = choose_word_segmenter(o.word_segmenter, docs)
  o = dataclasses.replace(o, word_segmenter=word_segmenter)  # "auto" resolved
  token_dtype = records.token_dtype_for(tokenizer.vocab_size, o.word_segmenter is not None)
  if o.word_segmenter is not None:
    word_segmentation.load_segmenter(o.word_segmenter)  # Fails here, before any work.
  settings = _settings(tokenizer, files, tfds_name, o)
  fingerprint = _fingerprint(settings)
  # How the segmenter was chosen: recorded, but not part of what makes the data (resumes of
  # data prepared before this was recorded still match).
  settings = dict(settings, word_segmenter_choice=segmenter_choice)
  os.makedirs(output_dir, exist_ok=True)
  if _resumes(output_dir, fingerprint, settings):
    if os.path.exists(os.path.join(output_dir, MANIFEST)):
      return read_manifest(output_dir)
  tokenizer_file = os.path.basename(tokenizer.save(output_dir))
  np.save(os.path.join(output_dir, "word_start.npy"), tokenizer.word_start_table())
  bar = _Progress(o.progress)
  summaries = _tokenize_units(output_dir, docs, tokenizer, token_dtype, o, bar)
  bar.update(0, 0, final=True)
  manifest = _write_manifest(output_dir, tokenizer, tokenizer_file, token_dtype, summaries,
                             read_skips, settings,
                             {"seconds": round(time.time() - bar.start, 2),
                              "num_workers": o.num_workers})
  if manifest["unk_rate"] > UNK_RATE_WARNING:
    warnings.warn(unk_warning(manifest, output_dir), stacklevel=2)
  return manifest


def _settings(tokenizer: Tokenizer, files: list[str] | None, tfds_name: str | None,
              o: PrepareOptions) -> dict:
  """What the dataset depends on (its fingerprint): a rerun resumes only when they match."""
  if files is not None:
    source_desc = {"files": [[f, os.path.getsize(f)] for f in files], "format": o.text_format,
                   "encoding": o.encoding}
  else:
    source_desc = {"tfds": tfds_name, "split": o.tfds_split}
  return {"format_version": FORMAT_VERSION, "tokenizer": tokenizer.identity,
          "source": source_desc, "eval_fraction": o.eval_fraction, "seed": o.seed,
          "docs_per_shard": o.docs_per_shard, "max_sentence_tokens": o.max_sentence_tokens,
          "page_tokens": records.PAGE_TOKENS, "text_rules": o.text_rules.to_json(),
          "word_segmenter": o.word_segmenter}


def _resumes(output_dir: str, fingerprint: str, settings: dict) -> bool:
  """True when `output_dir` holds (part of) the dataset of `fingerprint`; records the
  settings of a new one; an error for a dataset prepared with other settings."""
  state_path = os.path.join(output_dir, "prepare_state.json")
  if not os.path.exists(state_path):
    with open(state_path, "w") as f:
      json.dump({"fingerprint": fingerprint, "settings": settings}, f, indent=1)
    return False
  with open(state_path) as f:
    previous = json.load(f)
  if previous.get("fingerprint") != fingerprint:
    raise PrepareError(
        f"{output_dir} holds data prepared with different settings or inputs "
        f"(fingerprint {previous.get('fingerprint')} != {fingerprint}); use a new "
        f"output directory or delete it")
  return True


def _tokenize_units(output_dir: str, docs, tokenizer: Tokenizer, token_dtype,
                    o: PrepareOptions, bar: _Progress) -> list[dict]:
  """Tokenizes the unfinished units (in `o.num_workers` processes), reads the finished
  ones' summaries; returns every unit's summary, in order."""
  pool = None
  if o.num_workers > 0:
    pool = multiprocessing.get_context("spawn").Pool(
        o.num_workers, initializer=_init_worker,
        initargs=(tokenizer.path, o.lowercase, o.word_segmenter))
  else:
    _init_worker(tokenizer.path, o.lowercase, o.word_segmenter)
  summaries = []
  ordinal = 0
  try:
    for unit, batch in _units(docs, o.docs_per_shard):
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
                o.max_sentence_tokens, token_dtype)
               for i in range(0, len(batch), _DOCS_PER_TASK)]
      for task, (outs, skip_json) in zip(tasks, _run_tasks(pool, tasks, o.num_workers)):
        writer.skips.merge(corpus_lib.SkipLog.from_json(skip_json))
        for out in outs:
          split = "eval" if _stream_hash01(o.seed, ordinal) < o.eval_fraction else "train"
          ordinal += 1
          if out is not None:
            writer.add(split, *out)
        bar.update(len(task[0]), sum(len(s.encode()) + 1 for _, ss in task[0] for s in ss))
      summaries.append(writer.finish(len(batch), num_bytes))
  finally:
    if pool is not None:
      pool.terminate()
  return summaries


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


def _split_manifest(output_dir: str, tokenizer: Tokenizer, summaries: list[dict],
                    split: str) -> dict:
  """One split's entry of the manifest: shards, counts, [UNK] rate, unigram baseline."""
  counts = [s["splits"][split] for s in summaries]
  token_counts = np.zeros(tokenizer.vocab_size, np.int64)
  for entry in counts:
    index = records.read_index(os.path.join(output_dir, entry["shard"].replace(
        ".array_record", ".index.npz")))
    token_counts += index["token_counts"]
  maskable = token_counts.copy()
  maskable[list(tokenizer.special_ids.values())] = 0
  total = int(maskable.sum())
  all_tokens = int(token_counts.sum())
  return {
      "shards": [c["shard"] for c in counts],
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


def _write_manifest(output_dir: str, tokenizer: Tokenizer, tokenizer_file: str, token_dtype,
                    summaries: list[dict], skips: corpus_lib.SkipLog, settings: dict,
                    last_run: dict) -> dict:
  splits = {split: _split_manifest(output_dir, tokenizer, summaries, split)
            for split in SPLITS}
  for s in summaries:
    skips.merge(corpus_lib.SkipLog.from_json(s["skipped"]))
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
      "input_bytes": sum(s["input_bytes"] for s in summaries),
      "skipped": skips.to_json(),
      "settings": settings,
      "last_run": last_run,
  }
  fileio.write_text_atomic(os.path.join(output_dir, MANIFEST), json.dumps(manifest, indent=1))
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
