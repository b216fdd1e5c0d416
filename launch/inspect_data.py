"""Prints decoded pretraining examples and measured batch statistics.

python -m launch.inspect_data --data_dir=DIR --num_batches=N [--batch_size=B] \
    [--max_seq_length=L] [--split=train] [--dump=FILE.npz]
Examples show segment B in {braces} and masked tokens as [MASK->orig], [orig->random]
or [=orig]; the statistics are one JSON line.
"""
import json
import sys

import numpy as np
from absl import flags

from data_pipeline.batch_stats import SPECIAL_KEYS, batch_statistics, render_example
from data_pipeline.loader import LoaderConfig, make_pretraining_iterator
from data_pipeline.text.tokenizer import load_tokenizer
from launch import cli

_DATA = flags.DEFINE_string("data_dir", None, "A prepared dataset.", required=True)
_N = flags.DEFINE_integer("num_batches", 10, "Batches to measure.")
_B = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_L = flags.DEFINE_integer("max_seq_length", 128, "Sequence length.")
_P = flags.DEFINE_integer("max_predictions_per_seq", None, "Default: ~0.15 * L rounded up.")
_SPLIT = flags.DEFINE_string("split", "train", "train or eval.")
_MODE = flags.DEFINE_enum("pair_mode", "nsp", ["nsp", "sop", "none"], "Pair mode.")
_WWM = flags.DEFINE_bool("whole_word_masking", False, "Whole-word masking.")
_SHOW = flags.DEFINE_integer("show", 3, "Examples to print.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_DUMP = flags.DEFINE_string("dump", None, "Write the raw arrays of the batches to this .npz.")


def main(argv):
  del argv
  predictions = _P.value or max(1, int(np.ceil(_L.value * 0.15)))
  it = make_pretraining_iterator(LoaderConfig(
      _DATA.value, split=_SPLIT.value, global_batch_size=_B.value,
      max_seq_length=_L.value, max_predictions_per_seq=predictions,
      pair_mode=_MODE.value, whole_word_masking=_WWM.value, seed=_SEED.value))
  manifest = it.manifest
  tokenizer = load_tokenizer(_DATA.value)
  batches, chunk_sentences = [], []
  for step in range(_N.value):
    try:
      batches.append(next(it))
    except StopIteration:
      break
    chunk_sentences.append(it.chunk_sentence_counts(step))
  for row in range(min(_SHOW.value, len(batches[0]["input_ids"]))):
    print(render_example(batches[0], row, tokenizer.id_to_token, manifest))
    print()
  print(json.dumps(batch_statistics(batches, manifest, chunk_sentences)))
  if _DUMP.value:
    arrays = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    arrays.update({k: np.int32(manifest[k]) for k in SPECIAL_KEYS})
    arrays["vocab_size"] = np.int32(manifest["vocab_size"])
    np.savez(_DUMP.value, **arrays)
    print(f"wrote {_DUMP.value}", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
