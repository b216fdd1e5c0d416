"""Benchmarks the input pipeline: prepare MB/s per worker, loader sequences/s per core
(unpacked and packed).

python -m launch.benchmark_data [--workdir=/tmp/bert_jax_bench] [--num_workers=2] \
    [--input=GLOB --tokenizer=PATH]    (default: the quickstart corpus and tokenizer)
    [--text_format=paragraphs --word_segmenter=jieba]   (Chinese whole-word masking)
Prints one JSON line per measurement.
"""
import json
import os
import shutil

from absl import flags

from data_pipeline import benchmark
from data_pipeline.quickstart import prepare_default_dataset
from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bert_jax_bench", "Scratch directory.")
_WORKERS = flags.DEFINE_integer("num_workers", 2, "Prepare worker processes.")
_INPUT = flags.DEFINE_string("input", None, "Text globs (default: quickstart corpus).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer (default: quickstart's).")
_COPIES = flags.DEFINE_list("copies", ["1", "4"], "Corpus sizes (copies) for the memory check.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Loader measuring time per setting.")
_DATA = flags.DEFINE_string("data_dir", None, "Time the loader on this prepared set only "
                            "(skips prepare).")
_FORMAT = flags.DEFINE_enum("text_format", "bert", ["bert", "lines", "paragraphs"],
                            "Input layout.")
_SEGMENTER = flags.DEFINE_enum("word_segmenter", None, ["jieba"], "Store Chinese word "
                               "starts (whole-word masking then reads them).")


def main(argv):
  del argv
  if _DATA.value:
    for length in (128, 512):
      for packing in (False, True):
        print(json.dumps({"loader": benchmark.measure_loader(
            _DATA.value, length, seconds=_SECONDS.value, packing=packing)}), flush=True)
    return
  quick = prepare_default_dataset(os.path.join(_WORKDIR.value, "quickstart"))
  corpus_dir = os.path.join(_WORKDIR.value, "quickstart", "corpus")
  inputs = _INPUT.value or os.path.join(corpus_dir, "*.txt")
  tokenizer = _TOKENIZER.value or os.path.join(_WORKDIR.value, "quickstart", "tokenizer")
  out = quick
  for copies in sorted(int(c) for c in _COPIES.value):
    spec = inputs
    if copies > 1:  # Same text repeated: memory must stay flat as the corpus grows.
      rep = os.path.join(_WORKDIR.value, f"x{copies}")
      os.makedirs(rep, exist_ok=True)
      from data_pipeline.corpus import expand_inputs
      for i, f in enumerate(expand_inputs(inputs)):
        for c in range(copies):
          target = os.path.join(rep, f"{c}-{i}-{os.path.basename(f)}")
          if not os.path.exists(target):
            shutil.copyfile(f, target)
      spec = os.path.join(rep, "*")
    out = os.path.join(_WORKDIR.value, f"prepared_x{copies}")
    shutil.rmtree(out, ignore_errors=True)
    result = benchmark.measure_prepare(spec, tokenizer, out, _WORKERS.value, _FORMAT.value,
                                       _SEGMENTER.value)
    print(json.dumps({"prepare": result, "copies": copies}), flush=True)
  # The loader reads the largest prepared copy: an epoch walk per few batches of a tiny
  # corpus would count for more than it does on a real one.
  for length in (128, 512):
    for wwm in (False, True):
      for packing in (False, True):  # packing: the same sequences, several per row
        print(json.dumps({"loader": benchmark.measure_loader(
            out, length, seconds=_SECONDS.value, whole_word=wwm, packing=packing)}), flush=True)


if __name__ == "__main__":
  cli.run(main)
