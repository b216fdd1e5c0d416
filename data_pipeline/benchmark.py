"""Throughput of the two halves of the pipeline: prepare (MB/s per worker, peak memory) and
the loader (sequences/s on one core, pairs and masking included, from prepared shards)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from data_pipeline.loader import LoaderConfig, make_pretraining_iterator


def measure_prepare(inputs: str, tokenizer: str, output_dir: str, num_workers: int,
                    text_format: str = "bert", word_segmenter: str | None = None) -> dict:
  """Runs prepare in a child process (so its peak RSS, workers included, is measurable)."""
  code = ("import json, resource; from data_pipeline.prepare import PrepareOptions, prepare; "
          f"m = prepare({output_dir!r}, {tokenizer!r}, inputs={inputs!r}, "
          f"options=PrepareOptions(num_workers={num_workers}, docs_per_shard=2000, "
          f"progress=False, text_format={text_format!r}, word_segmenter={word_segmenter!r})); "
          "r = resource.getrusage; "
          "print(json.dumps({'bytes': m['input_bytes'], 'seconds': m['last_run']['seconds'], "
          "'main_kb': r(resource.RUSAGE_SELF).ru_maxrss, "
          "'worker_kb': r(resource.RUSAGE_CHILDREN).ru_maxrss}))")
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  mb_s = result["bytes"] / 1e6 / result["seconds"]
  return {"input_mb": round(result["bytes"] / 1e6, 2), "seconds": result["seconds"],
          "num_workers": num_workers, "word_segmenter": word_segmenter, "mb_per_s": round(mb_s, 2),
          "mb_per_s_per_worker": round(mb_s / max(num_workers, 1), 2),
          "peak_rss_mb_main": round(result["main_kb"] / 1024, 1),
          "peak_rss_mb_largest_worker": round(result["worker_kb"] / 1024, 1)}


def measure_loader(data_dir: str, max_seq_length: int, batch_size: int = 256,
                   seconds: float = 10.0, whole_word: bool = False, packing: bool = False,
                   packing_max_instances: int = 8) -> dict:
  """Sequences/s of the in-process loader (worker_count=0: one core, its prefetch thread
  included in the CPU time), reading token pages from the shards for every batch; also the
  seconds one epoch's document walk takes (once per epoch and process).

  With `packing`, a batch is `batch_size` packed rows: `seq_per_s_*` count the sequences
  (instances) made, `rows_per_s_per_cpu_second` the rows, and `epoch_walk_cpu_seconds`
  includes packing the epoch. `real_token_fraction` is the share of non-pad tokens. The
  timed loop includes the epoch walks it runs into (on a small corpus, every few batches).
  """
  predictions = {128: 20, 512: 80}.get(max_seq_length, max(1, round(max_seq_length * 0.15)))
  it = make_pretraining_iterator(LoaderConfig(
      data_dir, global_batch_size=batch_size, max_seq_length=max_seq_length,
      max_predictions_per_seq=predictions, whole_word_masking=whole_word, packing=packing,
      packing_max_instances=packing_max_instances))
  next(it)  # Walks (and packs) the first epoch.
  start, cpu0, rows, seqs, real = time.perf_counter(), time.process_time(), 0, 0, 0
  while time.perf_counter() - start < seconds:
    b = next(it)
    rows += len(b["input_ids"])
    seqs += int(b["instance_weights"].sum()) if packing else len(b["input_ids"])
    real += int(b["attention_mask"].sum())
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
  walk_start = time.thread_time()
  epochs = it._maker.epochs  # pylint: disable=protected-access
  examples = epochs._walk(1000)  # pylint: disable=protected-access
  if packing:
    epochs._pack(1000, examples)  # pylint: disable=protected-access
  walk_seconds = time.thread_time() - walk_start
  per_epoch = epochs.units(0)
  return {"max_seq_length": max_seq_length, "batch_size": batch_size, "packing": packing,
          "whole_word_masking": whole_word, "sequences": seqs, "rows": rows,
          "epoch_walk_cpu_seconds": round(walk_seconds, 3),
          "epoch_rows": per_epoch, "epoch_sequences": len(epochs.examples(0)),
          "real_token_fraction": round(real / (rows * max_seq_length), 4),
          "seq_per_s_wall": round(seqs / wall), "seq_per_s_per_cpu_second": round(seqs / cpu),
          "rows_per_s_per_cpu_second": round(rows / cpu)}
