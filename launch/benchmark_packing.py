r"""Packed vs unpacked pretraining, side by side: useful (non-pad) tokens/s and padding.

  python -m launch.benchmark_packing --config=bert_jax/configs/tiny.py \
      [--workdir=/tmp/bert_jax_packing] [--seq_lens=128,512] [--batch_rows=32] [--steps=10]

Two prepared sets of real text: the quickstart corpus (the standard library's prose, one
long document per module) and the same sentences re-cut into short documents of 1-4
sentences (the shape of news items, reviews, paragraphs). For each set and sequence length,
train steps of the config's model are timed on real loader batches, unpacked and packed,
with the same number of rows per step, stepped in turn (median step times). Prints one JSON line per measurement and a summary
line per (corpus, seq_len) with the packed / unpacked ratio of useful tokens/s.
"""
import glob
import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from bert_jax import benchmark
from data_pipeline import prepare as prepare_lib
from data_pipeline.loader import LoaderConfig, make_pretraining_iterator
from data_pipeline.quickstart import prepare_default_dataset

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bert_jax_packing", "Scratch directory.")
_SEQ = flags.DEFINE_list("seq_lens", ["128", "512"], "Sequence lengths.")
_ROWS = flags.DEFINE_integer("batch_rows", 32, "Rows per step, packed or not.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_BATCHES = flags.DEFINE_integer("num_batches", 4, "Distinct loader batches, cycled.")
_MAX_INSTANCES = flags.DEFINE_integer("packing_max_instances", 8, "Instance slots per row.")
flags.mark_flags_as_required(["config"])


def _short_documents(corpus_files, path):
  """The corpus's sentences in documents of 1, 2, 3, 4, 1, 2, ... sentences."""
  cut = 0
  with open(path, "w") as out:
    for name in corpus_files:
      with open(name) as f:
        docs = f.read().split("\n\n")
      for doc in docs:
        sentences = [s for s in doc.splitlines() if s.strip()]
        while sentences:
          n = cut % 4 + 1
          out.write("\n".join(sentences[:n]) + "\n\n")
          sentences, cut = sentences[n:], cut + 1
  return path


def _datasets(workdir, vocab_size):
  quick = os.path.join(workdir, "quickstart")
  long_dir = prepare_default_dataset(quick, vocab_size=vocab_size, progress=False)
  short_dir = os.path.join(workdir, "short_documents")
  if not os.path.exists(os.path.join(short_dir, prepare_lib.MANIFEST)):
    text = _short_documents(sorted(glob.glob(os.path.join(quick, "corpus", "*.txt"))),
                            os.path.join(workdir, "short_documents.txt"))
    prepare_lib.prepare(short_dir, os.path.join(quick, "tokenizer", "spm.model"), inputs=text,
                        options=prepare_lib.PrepareOptions(eval_fraction=0.05,
                                                           docs_per_shard=5000, progress=False))
  return {"long_documents": long_dir, "short_documents": short_dir}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  base = _CONFIG.value
  for corpus, data_dir in _datasets(_WORKDIR.value, base.model.vocab_size).items():
    for seq in (int(s) for s in _SEQ.value):
      config = base.copy_and_resolve_references()
      config.unlock()
      config.max_seq_length = seq
      config.max_predictions_per_seq = -(-15 * seq // 100)
      config.model.max_position_embeddings = max(config.model.max_position_embeddings, seq)
      config.global_batch_size = _ROWS.value
      config.data.packing_max_instances = _MAX_INSTANCES.value
      config.data.data_dir = data_dir
      streams = {}
      for name, packing in (("unpacked", False), ("packed", True)):
        it = make_pretraining_iterator(LoaderConfig(
            data_dir, global_batch_size=_ROWS.value, max_seq_length=seq,
            max_predictions_per_seq=config.max_predictions_per_seq, packing=packing,
            packing_max_instances=_MAX_INSTANCES.value, seed=config.seed))
        streams[name] = [next(it) for _ in range(_BATCHES.value)]
      results = benchmark.run_on_batches(config, streams, steps=_STEPS.value)
      for name, result in results.items():
        print(json.dumps({"corpus": corpus, "stream": name, **result}), flush=True)
      u, p = results["unpacked"], results["packed"]
      print(json.dumps({
          "corpus": corpus, "seq_len": seq, "preset": base.preset, "batch_rows": _ROWS.value,
          "padding_fraction_unpacked": round(u["padding_fraction"], 3),
          "padding_fraction_packed": round(p["padding_fraction"], 3),
          "instances_per_row_packed": round(p["instances_per_row"], 2),
          "step_time_ratio_packed_over_unpacked": round(p["step_time_s"] / u["step_time_s"], 3),
          "useful_tokens_per_sec_unpacked": round(u["useful_tokens_per_sec"]),
          "useful_tokens_per_sec_packed": round(p["useful_tokens_per_sec"]),
          "speedup_useful_tokens": round(p["useful_tokens_per_sec"]
                                         / u["useful_tokens_per_sec"], 2)}), flush=True)


if __name__ == "__main__":
  app.run(main)
