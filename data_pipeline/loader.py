"""Deterministic, resumable, host-sharded pretraining batches on grain.

Order: epoch e visits the split's chunks (see instances.py) in a permutation drawn from
(seed, e). Global batch g of an epoch holds permuted positions [g*G, (g+1)*G); host p of P
takes rows [p*B, (p+1)*B) of it, B = G // P. Each example's pair and mask are drawn from
(seed, e, chunk id), so a batch does not depend on the host count, on worker processes, or
on where a run was resumed. grain supplies the index bookkeeping, the checkpointable
iterator and the background worker processes; a "record" of the grain dataset is a whole
host batch, built with vectorised NumPy (pair planning, one gather, masking).
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import gc
import hashlib
import json
import os
import weakref

import numpy as np

from data_pipeline import instances, masking, records
from data_pipeline.grain_compat import import_grain
from data_pipeline.prepare import read_manifest

CONTRACT_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                 "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")
_STATE_VERSION = 1
_CACHE_BYTES = 256 << 20  # Decoded-document cache per process (main or each worker).


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
  data_dir: str                 # output of prepare (shards + manifest.json + tokenizer files)
  split: str = "train"          # "train" or "eval"
  global_batch_size: int = 256
  process_index: int = 0
  process_count: int = 1
  max_seq_length: int = 128
  max_predictions_per_seq: int = 20
  masked_lm_prob: float = 0.15
  short_seq_prob: float = 0.1
  pair_mode: str = "nsp"        # "nsp" | "sop" | "none" (one segment, labels all 0)
  whole_word_masking: bool = False
  seed: int = 0
  num_epochs: int | None = None # None = repeat forever
  worker_count: int = 0         # background worker processes (0 = in-process)
  drop_remainder: bool = True


def _check_config(c: LoaderConfig) -> None:
  problems = []
  if c.process_count < 1 or not 0 <= c.process_index < c.process_count:
    problems.append(f"process_index={c.process_index} must be in [0, process_count="
                    f"{c.process_count})")
  elif c.global_batch_size < 1 or c.global_batch_size % c.process_count:
    problems.append(f"global_batch_size={c.global_batch_size} must be a positive multiple of "
                    f"process_count={c.process_count}")
  if c.max_seq_length < 8:
    problems.append(f"max_seq_length={c.max_seq_length} is too small (>= 8)")
  if c.max_predictions_per_seq < 1:
    problems.append("max_predictions_per_seq must be >= 1")
  if not 0.0 < c.masked_lm_prob < 1.0:
    problems.append(f"masked_lm_prob={c.masked_lm_prob} must be in (0, 1)")
  if not 0.0 <= c.short_seq_prob <= 1.0:
    problems.append(f"short_seq_prob={c.short_seq_prob} must be in [0, 1]")
  if c.pair_mode not in instances.PAIR_MODES:
    problems.append(f"pair_mode={c.pair_mode!r} must be one of {instances.PAIR_MODES}")
  if c.num_epochs is not None and c.num_epochs < 1:
    problems.append("num_epochs must be None (forever) or >= 1")
  if c.worker_count < 0:
    problems.append("worker_count must be >= 0")
  if not c.drop_remainder and c.process_count > 1:
    # Hosts would disagree on the last batch's size and deadlock in the collective.
    problems.append("drop_remainder=False needs process_count == 1")
  if problems:
    raise ValueError("LoaderConfig: " + "; ".join(problems))


class _SplitData:
  """Everything a batch needs about a split: sentence layout, chunks, shard reader, tables."""

  def __init__(self, config: LoaderConfig):
    manifest = read_manifest(config.data_dir)
    if config.split not in manifest["splits"]:
      raise ValueError(f"{config.data_dir}: no split {config.split!r} "
                       f"(has {sorted(manifest['splits'])})")
    split = manifest["splits"][config.split]
    paths, per_shard, counts, lengths = [], [], [], []
    for shard, docs in zip(split["shards"], split["documents_per_shard"]):
      if docs == 0:
        continue  # Eval shards of small units can be empty; they hold nothing to read.
      path = os.path.join(config.data_dir, shard)
      if not os.path.exists(path):
        raise FileNotFoundError(f"{config.data_dir}: shard {shard} listed in the manifest is "
                                f"missing")
      index = records.read_index(path.replace(".array_record", ".index.npz"))
      paths.append(path)
      per_shard.append(docs)
      counts.append(index["sentence_counts"])
      lengths.append(index["sentence_lengths"])
    if not paths:
      raise ValueError(f"{config.data_dir}: split {config.split!r} has no documents "
                       f"(eval needs --eval_fraction > 0 and a large enough corpus)")
    self.index = instances.DocumentIndex.from_counts(np.concatenate(counts),
                                                     np.concatenate(lengths))
    if config.pair_mode == "nsp" and self.index.num_documents < 2:
      raise ValueError(f"{config.data_dir}: split {config.split!r} has one document; NSP "
                       f"needs at least two (random B comes from another document)")
    max_num_tokens = config.max_seq_length - (2 if config.pair_mode == "none" else 3)
    self.chunks = instances.build_chunks(self.index, max_num_tokens)
    self.reader = records.ShardReader(paths, per_shard, manifest["token_dtype"])
    word_start = np.load(os.path.join(config.data_dir, "word_start.npy"))
    self.manifest = manifest
    self.tables = masking.MaskingTables.create(
        manifest["vocab_size"],
        [manifest[k] for k in ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")],
        word_start, manifest["mask_id"])


class _BatchMaker:
  """grain map function: global step -> this host's batch. Picklable for worker processes."""

  def __init__(self, config: LoaderConfig, data: _SplitData):
    self.c = config
    self.data = data
    self.num_examples = len(data.chunks)
    g = config.global_batch_size
    self.batches_per_epoch = (self.num_examples // g if config.drop_remainder
                              else -(-self.num_examples // g))
    self.host_rows = g // config.process_count
    self._perm_epoch = None
    self._perm = None
    self._cache = collections.OrderedDict()
    self._cache_bytes = 0

  def _documents(self, docs: np.ndarray) -> list[np.ndarray]:
    """Token arrays of `docs`, through a per-process LRU cache bounded in bytes.

    Random reads of whole documents are the loader's main cost; a corpus (or its hot part)
    that fits in the budget is read from disk once per process.
    """
    cache = self._cache
    out = [cache.get(d) for d in docs.tolist()]
    missing = [i for i, piece in enumerate(out) if piece is None]
    if missing:
      records_ = self.data.reader.read(docs[missing])
      for i, record in zip(missing, records_):
        out[i] = records.decode_document(record, self.data.reader.token_dtype)[1].copy()
        cache[int(docs[i])] = out[i]
        self._cache_bytes += out[i].nbytes
    for d in docs.tolist():
      cache.move_to_end(d)
    while self._cache_bytes > _CACHE_BYTES and cache:
      self._cache_bytes -= cache.popitem(last=False)[1].nbytes
    return out

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_cache"], state["_cache_bytes"] = collections.OrderedDict(), 0
    return state

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._perm_epoch != epoch:
      rng = np.random.Generator(np.random.Philox(key=[self.c.seed, epoch]))
      self._perm = rng.permutation(self.num_examples)
      self._perm_epoch = epoch
    return self._perm

  def example_ids(self, step: int) -> tuple[int, np.ndarray]:
    """(epoch, chunk ids of this host's rows) for global step `step`."""
    epoch, b = divmod(step, self.batches_per_epoch)
    first = b * self.c.global_batch_size + self.c.process_index * self.host_rows
    positions = np.arange(first, min(first + self.host_rows, self.num_examples))
    return epoch, self._permutation(epoch)[positions]

  def __call__(self, step: int, _unused=None) -> dict[str, np.ndarray]:
    c, data = self.c, self.data
    epoch, ids = self.example_ids(step)
    plan = instances.plan_pairs(data.index, data.chunks, ids, c.seed, epoch, c.max_seq_length,
                                c.short_seq_prob, c.pair_mode)
    docs = np.unique(np.concatenate([plan.doc_a, plan.doc_b]))
    pieces = self._documents(docs)
    sizes = np.array([len(p) for p in pieces], dtype=np.int64)
    base = np.zeros(data.index.num_documents, dtype=np.int64)
    base[docs] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    tokens = np.concatenate(pieces).astype(np.int32)
    ids_, types, attention = instances.assemble(
        plan, tokens, base, c.max_seq_length, data.manifest["cls_id"], data.manifest["sep_id"],
        data.manifest["pad_id"], two_segments=c.pair_mode != "none")
    masked = masking.mask_tokens(ids_, attention, ids, data.tables, c.seed, epoch,
                                 c.masked_lm_prob, c.max_predictions_per_seq,
                                 c.whole_word_masking)
    return {
        "input_ids": masked["input_ids"],
        "token_type_ids": types,
        "attention_mask": attention,
        "masked_lm_positions": masked["masked_lm_positions"],
        "masked_lm_ids": masked["masked_lm_ids"],
        "masked_lm_weights": masked["masked_lm_weights"],
        "next_sentence_labels": plan.label.astype(np.int32),
    }


def _fingerprint(config: LoaderConfig, manifest: dict) -> str:
  """What a saved state must match: everything that decides batch contents and order."""
  fields = dataclasses.asdict(config)
  for volatile in ("data_dir", "worker_count", "num_epochs"):
    fields.pop(volatile)
  fields["data"] = manifest["settings"]
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _absl_flags_usable() -> None:
  """Lets grain read its absl flags in a program that never parsed any.

  With jax loaded (a training process), grain's worker start-up reads its own
  absl flags; outside an absl app (a library caller, a notebook, a test) they
  are unparsed and reading them raises. Their defaults are what such a caller
  wants; an absl app that parses later still parses as usual.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class PretrainingIterator:
  """Iterates host batches (dicts of NumPy arrays, see CONTRACT_KEYS); checkpointable."""

  def __init__(self, config: LoaderConfig):
    grain = import_grain()
    _check_config(config)
    self.config = config
    self._data = _SplitData(config)
    self._maker = _BatchMaker(config, self._data)
    if self._maker.batches_per_epoch == 0:
      raise ValueError(
          f"{config.data_dir}: split {config.split!r} yields {self._maker.num_examples} "
          f"sequences at max_seq_length={config.max_seq_length}, fewer than one global batch "
          f"of {config.global_batch_size}; lower the batch size or prepare more text")
    self._fingerprint = _fingerprint(config, self._data.manifest)
    dataset = (grain.MapDataset.range(self._maker.batches_per_epoch)
               .repeat(config.num_epochs).map_with_index(self._maker))
    # One background thread, two batches ahead: batches are built while the training step
    # runs, without grain's default 16 threads x 500 elements of read-ahead.
    dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
    if config.worker_count > 0:
      _absl_flags_usable()
      dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=config.worker_count, per_worker_buffer_size=2))
    self._iter = iter(dataset)
    if config.worker_count > 0:
      self_ref = weakref.ref(self)
      atexit.register(lambda: self_ref() is not None and self_ref().close())

  @property
  def batches_per_epoch(self) -> int:
    return self._maker.batches_per_epoch

  @property
  def manifest(self) -> dict:
    return self._data.manifest

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iter is None:
      raise StopIteration
    return next(self._iter)

  def get_state(self) -> dict:
    """JSON-serialisable position; `set_state` on a fresh iterator resumes exactly here."""
    return {"version": _STATE_VERSION, "fingerprint": self._fingerprint,
            "grain": _jsonable(self._iter.get_state())}

  def set_state(self, state: dict) -> None:
    if state.get("version") != _STATE_VERSION:
      raise ValueError(f"iterator state version {state.get('version')} is not "
                       f"{_STATE_VERSION}")
    if state.get("fingerprint") != self._fingerprint:
      raise ValueError("iterator state was saved with a different data set or loader "
                       "settings (seed, batch size, sequence length, ...); cannot resume "
                       "the same stream")
    self._iter.set_state(state["grain"])

  def close(self) -> None:
    """Stops worker processes. Also runs at exit: grain's iterators otherwise tear down
    during interpreter shutdown and print spurious errors."""
    if self._iter is None:
      return
    close = getattr(self._iter, "close", None)
    if close is not None:
      close()
    self._iter = None
    gc.collect()  # Finalise grain's inner iterators now, while their modules still exist.


def _jsonable(state):
  """grain's states are dicts of ints/strings (bytes in some versions): make them JSON."""
  json.dumps(state)  # Raises TypeError with the offending type if grain changes format.
  return state


def make_pretraining_iterator(config: LoaderConfig) -> PretrainingIterator:
  """This host's batches for `config`; raises StopIteration after `num_epochs` epochs."""
  return PretrainingIterator(config)
