"""Tokenizes a corpus into sharded array_record documents for pretraining.

python -m launch.prepare_data --input=GLOB[,GLOB...] --tokenizer=PATH --output_dir=DIR \
    [--num_workers=N] [--eval_fraction=F] [--text_format=bert|lines|paragraphs] \
    [--encoding=gb18030] [--nfkc] [--semicolon_ends_sentence] [--word_segmenter=auto|none|jieba]
python -m launch.prepare_data --tfds=wikipedia/20230601.en:text --tfds_data_dir=DIR ...
Rerun the same command to resume after an interruption. --word_segmenter=jieba stores
Chinese word starts for whole-word masking (pretrain with whole_word_masking=True); the
default, auto, does so when the corpus is mostly Chinese/Japanese (none: never).
"""
import json
import sys
import warnings

from absl import flags

from data_pipeline import corpus
from data_pipeline.text import scripts as text_scripts
from data_pipeline.text import word_segmentation
from data_pipeline.prepare import PrepareOptions, prepare
from launch import cli

_INPUT = flags.DEFINE_string("input", None, "Comma-separated globs of local text files.")
_TFDS = flags.DEFINE_string("tfds", None, "TFDS dataset and text feature, name[/config]:feature.")
_TFDS_DIR = flags.DEFINE_string("tfds_data_dir", None, "Where the TFDS dataset is prepared.")
_TFDS_SPLIT = flags.DEFINE_string("tfds_split", "train", "TFDS split to read.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "spm .model, vocab.txt, or a directory.",
                                 required=True)
_OUTPUT = flags.DEFINE_string("output_dir", None, "Output directory.", required=True)
_WORKERS = flags.DEFINE_integer("num_workers", 0, "Tokenizer processes (0 = in-process).")
_EVAL = flags.DEFINE_float("eval_fraction", 0.01, "Fraction of documents held out for eval.")
_FORMAT = flags.DEFINE_enum("text_format", "bert", list(corpus.TEXT_FORMATS), "Input layout.")
_SHARD = flags.DEFINE_integer("docs_per_shard", 20_000, "Documents per shard (resume unit).")
_LOWER = flags.DEFINE_enum("lowercase", "auto", ["auto", "true", "false"],
                           "WordPiece casing; auto follows the vocabulary.")
_ENCODING = flags.DEFINE_string("encoding", "utf-8", "Text encoding of the input files "
                                "(e.g. gb18030, big5, shift_jis).")
_NFKC = flags.DEFINE_bool("nfkc", False, "Unicode NFKC (full-width ASCII -> ASCII).")
_SEMICOLON = flags.DEFINE_bool("semicolon_ends_sentence", False, "；ends a CJK sentence.")
_SEGMENTER = flags.DEFINE_enum(
    "word_segmenter", "auto", ["auto", "none", *word_segmentation.SEGMENTERS],
    "Store Chinese word starts for whole-word masking; auto: jieba when the corpus is "
    "mostly CJK (>= 50% of the first documents' characters), else none.")


def main(argv):
  del argv
  lowercase = {"auto": None, "true": True, "false": False}[_LOWER.value]
  rules = text_scripts.TextRules(semicolon_ends_sentence=_SEMICOLON.value, nfkc=_NFKC.value)
  # Library errors (CorpusError, PrepareError, TokenizerError, SegmenterError: ValueErrors)
  # reach launch.cli, which prints them as one `error:` line.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    manifest = prepare(_OUTPUT.value, _TOKENIZER.value, inputs=_INPUT.value,
                       tfds_name=_TFDS.value, options=PrepareOptions(
                           tfds_data_dir=_TFDS_DIR.value, tfds_split=_TFDS_SPLIT.value,
                           text_format=_FORMAT.value, num_workers=_WORKERS.value,
                           eval_fraction=_EVAL.value, docs_per_shard=_SHARD.value,
                           lowercase=lowercase, encoding=_ENCODING.value, text_rules=rules,
                           word_segmenter=(None if _SEGMENTER.value == "none"
                                           else _SEGMENTER.value)))
  for w in caught:
    print(f"warning: {w.message}", file=sys.stderr)
  summary = {split: {k: v for k, v in s.items() if k in ("documents", "sentences", "tokens")}
             for split, s in manifest["splits"].items()}
  print(json.dumps({"output_dir": _OUTPUT.value, "splits": summary,
                    "unk_rate": round(manifest["unk_rate"], 5),
                    "word_starts": manifest["word_starts"],
                    "word_segmenter_choice": manifest["settings"].get(
                        "word_segmenter_choice", {}).get("reason"),
                    "skipped": {k: v["count"] for k, v in manifest["skipped"].items()}}))


if __name__ == "__main__":
  cli.run(main)
