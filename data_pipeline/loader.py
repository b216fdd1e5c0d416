"""Deterministic, resumable, host-sharded pretraining batches on grain.

Order: epoch e visits the examples of BERT's document walk for (seed, e) (instances.py) in
a permutation drawn from (seed, e). Global batch g of an epoch holds permuted positions
[g*G, (g+1)*G); host p of P takes rows [p*B, (p+1)*B) of it, B = G // P. Each example's
pair and mask are drawn from (seed, e, its first sentence), so a batch does not depend on
the host count, on worker processes, or on where a run was resumed. grain supplies the index
bookkeeping, the checkpointable iterator and the background worker processes; a "record" of
the grain dataset is a whole host batch, built with vectorised NumPy (pair planning, reads
of the token pages it needs, masking).

With `packing`, a step's G units are packed *rows* instead of examples: the epoch's visiting
order is packed window by window (packing.py), global batch g holds rows [g*G, (g+1)*G),
and each instance in them is made exactly as without packing, then moved into its row.
"""
from __future__ import annotations

import atexit
import dataclasses
import gc
import hashlib
import json
import os
import threading
import warnings
import weakref

import numpy as np

from data_pipeline import instances, masking, packing, records
from data_pipeline.grain_compat import import_grain
from data_pipeline.prepare import CJK_SEGMENT_FRACTION as CJK_WORD_STARTS_FRACTION
from data_pipeline.prepare import read_manifest

# LoaderConfig fields that only matter with packing (kept out of unpacked fingerprints).
_PACKING_FIELDS = ("packing", "packing_max_instances", "packing_window")
_STATE_VERSION = 2  # 2: steps walk BERT-style epochs of varying length.
_FOREVER = 1 << 62  # Steps of a num_epochs=None stream: more than any run takes.


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
  packing: bool = False         # several instances per row (global_batch_size counts rows)
  packing_max_instances: int = 8  # K: instance slots per packed row
  packing_window: int = 1024    # examples packed together (best-fit decreasing)


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
  if c.packing:
    most = packing.max_instances_for(c.max_seq_length, c.pair_mode != "none")
    if most < 2:
      problems.append(f"packing=True needs rows that hold two instances: max_seq_length="
                      f"{c.max_seq_length} is too short (a row holds at most {most})")
    elif not 1 <= c.packing_max_instances <= most:
      problems.append(f"packing_max_instances={c.packing_max_instances} must be in [1, {most}] "
                      f"(a row of max_seq_length={c.max_seq_length} holds at most {most} "
                      f"instances)")
    if c.packing_window < 1:
      problems.append(f"packing_window={c.packing_window} must be >= 1")
  if not c.drop_remainder and c.process_count > 1:
    # Hosts would disagree on the last batch's size and deadlock in the collective.
    problems.append("drop_remainder=False needs process_count == 1")
  if problems:
    raise ValueError("LoaderConfig: " + "; ".join(problems))


def _warn_if_cjk_without_word_starts(data_dir: str, manifest: dict) -> None:
  """Whole-word masking on Chinese data prepared without a word segmenter masks single
  characters (each CJK character is a word to the tokenizer): said loudly, not silently."""
  choice = manifest.get("settings", {}).get("word_segmenter_choice") or {}
  cjk = choice.get("cjk_fraction")
  if cjk is not None and cjk >= CJK_WORD_STARTS_FRACTION:
    warnings.warn(
        f"{data_dir}: whole_word_masking=True, but this data is {cjk:.0%} CJK and was "
        f"prepared without a word segmenter: Chinese/Japanese words will NOT be masked whole "
        f"(each character is masked on its own). Prepare it again with "
        f"--word_segmenter=jieba (the default, auto, does so for mostly-CJK corpora)",
        stacklevel=3)


class _SplitData:
  """Everything a batch needs about a split: sentence layout, token reader, masking tables."""

  def __init__(self, config: LoaderConfig):
    manifest = read_manifest(config.data_dir)
    if config.split not in manifest["splits"]:
      raise ValueError(f"{config.data_dir}: no split {config.split!r} "
                       f"(has {sorted(manifest['splits'])})")
    split = manifest["splits"][config.split]
    paths, shard_tokens, counts, lengths = [], [], [], []
    for shard, docs, tokens in zip(split["shards"], split["documents_per_shard"],
                                   split["tokens_per_shard"]):
      if docs == 0:
        continue  # Eval shards of small units can be empty; they hold nothing to read.
      path = os.path.join(config.data_dir, shard)
      if not os.path.exists(path):
        raise FileNotFoundError(f"{config.data_dir}: shard {shard} listed in the manifest is "
                                f"missing")
      index = records.read_index(path.replace(".array_record", ".index.npz"))
      paths.append(path)
      shard_tokens.append(tokens)
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
    self.reader = records.TokenReader(paths, shard_tokens, manifest["token_dtype"],
                                      manifest["page_tokens"])
    # Shards prepared with a word segmenter (Chinese) carry per-token word starts in the
    # tokens' top bit; whole-word masking uses them instead of the per-id table.
    self.stored_word_starts = manifest.get("word_starts") is not None
    if config.whole_word_masking and not self.stored_word_starts:
      _warn_if_cjk_without_word_starts(config.data_dir, manifest)
    word_start = np.load(os.path.join(config.data_dir, "word_start.npy"))
    self.manifest = manifest
    self.tables = masking.MaskingTables.create(
        manifest["vocab_size"],
        [manifest[k] for k in ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")],
        word_start, manifest["mask_id"])


class _Epochs:
  """Where global steps fall: epoch e holds the examples of BERT's walk for (seed, e)
  (`instances.epoch_examples`), whose number varies a little from epoch to epoch, in a
  permutation drawn from (seed, e). Epochs are walked in order, once per process, and only
  the current one's examples are kept."""

  def __init__(self, config: LoaderConfig, index: instances.DocumentIndex):
    self.c = config
    self.index = index
    self.first_step = [0]  # first_step[e] = global step where epoch e starts
    self._current = (-1, None)  # (epoch, its examples in visiting order)
    # The prefetch thread makes batches while the caller may ask batches_in_epoch().
    self._lock = threading.RLock()

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.RLock()

  def _walk(self, epoch: int) -> np.ndarray:
    c = self.c
    examples = instances.epoch_examples(self.index, c.seed, epoch, c.max_seq_length,
                                        c.short_seq_prob, c.pair_mode)
    rng = np.random.Generator(np.random.Philox(key=[c.seed, epoch]))
    return examples[rng.permutation(len(examples))]

  def batches(self, num_units: int) -> int:
    g = self.c.global_batch_size
    return num_units // g if self.c.drop_remainder else -(-num_units // g)

  def examples(self, epoch: int) -> np.ndarray:
    return self._epoch(epoch)[0]

  def packed(self, epoch: int) -> packing.PackedEpoch:
    """The epoch's rows (packing only)."""
    return self._epoch(epoch)[1]

  def _epoch(self, epoch: int) -> tuple[np.ndarray, packing.PackedEpoch | None]:
    with self._lock:
      if self._current[0] != epoch:
        examples = self._walk(epoch)
        self._current = (epoch, (examples, self._pack(epoch, examples) if self.c.packing
                                 else None))
      return self._current[1]

  def _pack(self, epoch: int, examples: np.ndarray) -> packing.PackedEpoch:
    c = self.c
    lengths, content = [], []
    for lo in range(0, len(examples), 1 << 16):  # Bounded memory on large epochs.
      plan = instances.plan_pairs(self.index, examples[lo:lo + (1 << 16)], c.seed, epoch,
                                  c.max_seq_length, c.short_seq_prob, c.pair_mode)
      content.append(plan.a_len + plan.b_len)
    content = np.concatenate(content) if content else np.zeros(0, np.int64)
    lengths = content + (2 if c.pair_mode == "none" else 3)
    predictions = packing.prediction_bound(content, c.masked_lm_prob, c.max_predictions_per_seq)
    return packing.pack_epoch(lengths, predictions, seed=c.seed, epoch=epoch,
                              capacity=c.max_seq_length, max_predictions=c.max_predictions_per_seq,
                              max_instances=c.packing_max_instances, window=c.packing_window)

  def units(self, epoch: int) -> int:
    """What the epoch's batches are made of: examples, or packed rows."""
    return self.packed(epoch).num_rows if self.c.packing else len(self.examples(epoch))

  def known_epochs(self) -> int:
    return len(self.first_step) - 1

  def extend_to(self, epoch: int) -> None:
    """Learns where epochs up to `epoch` end."""
    with self._lock:
      self._extend_to(epoch)

  def _extend_to(self, epoch: int) -> None:
    while self.known_epochs() <= epoch:
      e = self.known_epochs()
      n = self.units(e)
      batches = self.batches(n)
      if batches == 0:
        raise ValueError(
            f"{self.c.data_dir}: split {self.c.split!r} yields {n} "
            f"{'packed rows' if self.c.packing else 'sequences'} in epoch {e} at "
            f"max_seq_length={self.c.max_seq_length}, fewer than one global batch of "
            f"{self.c.global_batch_size}; lower the batch size or prepare more text")
      self.first_step.append(self.first_step[-1] + batches)

  def locate(self, step: int) -> tuple[int, int]:
    """(epoch, batch within it) of global step `step`."""
    with self._lock:
      while self.first_step[-1] <= step:
        self._extend_to(self.known_epochs())
      epoch = int(np.searchsorted(self.first_step, step, side="right")) - 1
      return epoch, step - self.first_step[epoch]


class _BatchMaker:
  """grain map function: global step -> this host's batch. Picklable for worker processes."""

  def __init__(self, config: LoaderConfig, data: _SplitData):
    self.c = config
    self.data = data
    self.epochs = _Epochs(config, data.index)
    self.host_rows = config.global_batch_size // config.process_count

  def example_ids(self, step: int) -> tuple[int, np.ndarray]:
    """(epoch, names of this host's examples: their first sentences) for global step `step`."""
    epoch, b = self.epochs.locate(step)
    examples = self.epochs.examples(epoch)
    first = b * self.c.global_batch_size + self.c.process_index * self.host_rows
    return epoch, examples[first:first + self.host_rows]

  def packed_example_ids(self, step: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(epoch, this host's instances in row order, their row in the host batch) for
    global step `step` of a packed stream."""
    epoch, b = self.epochs.locate(step)
    first = b * self.c.global_batch_size + self.c.process_index * self.host_rows
    positions, rows = self.epochs.packed(epoch).members(range(first, first + self.host_rows))
    return epoch, self.epochs.examples(epoch)[positions], rows

  def _plan(self, ids: np.ndarray, epoch: int) -> instances.PairPlan:
    c = self.c
    return instances.plan_pairs(self.data.index, ids, c.seed, epoch, c.max_seq_length,
                                c.short_seq_prob, c.pair_mode)

  def _make(self, plan: instances.PairPlan, ids: np.ndarray, epoch: int, width: int):
    """(token_type_ids, attention_mask, masked) of planned examples, as [n, width] rows."""
    c, data = self.c, self.data
    ids_, types, attention = instances.assemble(
        plan, data.reader.gather, width, data.manifest["cls_id"], data.manifest["sep_id"],
        data.manifest["pad_id"], two_segments=c.pair_mode != "none")
    word_start = None
    if data.stored_word_starts:
      ids_, word_start = records.split_word_starts(ids_, data.manifest["token_dtype"])
      if not c.whole_word_masking:
        word_start = None
    rule = masking.MaskingRule(c.masked_lm_prob, c.max_predictions_per_seq,
                               c.whole_word_masking)
    masked = masking.mask_tokens(ids_, attention, ids, data.tables, c.seed, epoch, rule,
                                 word_start=word_start)
    return types, attention, masked

  def _packed_batch(self, step: int) -> dict[str, np.ndarray]:
    c = self.c
    epoch, ids, rows = self.packed_example_ids(step)
    plan = self._plan(ids, epoch)
    lengths = plan.a_len + plan.b_len + (2 if c.pair_mode == "none" else 3)
    # Instances are made only as wide as the longest: masking draws are keyed on positions,
    # not on the width, so each comes out as the unpacked loader makes it.
    types, _, masked = self._make(plan, ids, epoch, int(lengths.max()))
    return packing.pack_batch(rows, dict(masked, token_type_ids=types), lengths, plan.label,
                              self.host_rows, c.max_seq_length, c.max_predictions_per_seq,
                              c.packing_max_instances)

  def __call__(self, step: int, _unused=None) -> dict[str, np.ndarray]:
    c = self.c
    if c.packing:
      return self._packed_batch(step)
    epoch, ids = self.example_ids(step)
    plan = self._plan(ids, epoch)
    types, attention, masked = self._make(plan, ids, epoch, c.max_seq_length)
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
  if not config.packing:  # Unpacked streams keep the fingerprint they had before packing.
    for name in _PACKING_FIELDS:
      fields.pop(name)
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
  """Iterates host batches (dicts of NumPy arrays: the pretraining batch contract of
  `bert_jax.batch`, which tests check this loader's batches against); checkpointable."""

  def __init__(self, config: LoaderConfig):
    grain = import_grain()
    _check_config(config)
    self.config = config
    self._data = _SplitData(config)
    self._maker = _BatchMaker(config, self._data)
    epochs = self._maker.epochs
    # Walked here, before worker processes copy the maker, so that they start knowing it.
    epochs.extend_to(0 if config.num_epochs is None else config.num_epochs - 1)
    self._fingerprint = _fingerprint(config, self._data.manifest)
    num_steps = _FOREVER if config.num_epochs is None else epochs.first_step[config.num_epochs]
    dataset = grain.MapDataset.range(num_steps).map_with_index(self._maker)
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
    """Batches in the first epoch (later epochs differ by a few: see `batches_in_epoch`)."""
    return self.batches_in_epoch(0)

  def batches_in_epoch(self, epoch: int) -> int:
    epochs = self._maker.epochs
    epochs.extend_to(epoch)
    return epochs.first_step[epoch + 1] - epochs.first_step[epoch]

  @property
  def manifest(self) -> dict:
    return self._data.manifest

  def chunk_sentence_counts(self, step: int) -> np.ndarray:
    """Sentences in the chunk of each of this host's examples at global step `step`."""
    c = self.config
    epoch, ids = self._maker.example_ids(step)
    return instances.chunk_sentence_counts(self._data.index, ids, c.seed, epoch,
                                           c.max_seq_length, c.short_seq_prob, c.pair_mode)

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
