"""Trains a tokenizer with BERT's special tokens: SentencePiece, or a BERT WordPiece vocab.txt.

python -m launch.train_tokenizer --input=GLOB[,GLOB...] --output_dir=DIR --vocab_size=N \
    [--model_type=unigram|bpe|wordpiece] [--text_format=bert|lines|paragraphs] \
    [--encoding=utf-8|gb18030|shift_jis|...] [--nfkc] [--lowercase]
WordPiece uses BERT's normaliser and pre-tokeniser (every CJK character its own token, as
Google's Chinese BERT); a vocabulary smaller than asked (a small corpus) is said with its
reason. SentencePiece normalises as --nfkc says (NFKC, else nothing: full-width ，（） stay)
and picks its character coverage and dummy prefix (none: no lone ▁ per sentence) for
CJK-heavy text. What was chosen is in DIR/tokenizer_manifest.json.
"""
import sys
import warnings

from absl import flags

from data_pipeline import corpus
from data_pipeline.text import scripts as text_scripts
from data_pipeline.text.tokenizer import (load_tokenizer, read_tokenizer_manifest,
                                      train_sentencepiece, train_wordpiece)
from launch import cli

_INPUT = flags.DEFINE_string("input", None, "Comma-separated globs of text files.", required=True)
_OUTPUT = flags.DEFINE_string("output_dir", None, "Where spm.model / vocab.txt go.",
                              required=True)
_VOCAB = flags.DEFINE_integer("vocab_size", 32000, "Vocabulary size, specials included.")
_TYPE = flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe", "wordpiece"],
                          "SentencePiece unigram / BPE, or BERT WordPiece.")
_FORMAT = flags.DEFINE_enum("text_format", "bert", list(corpus.TEXT_FORMATS), "Input layout.")
_ENCODING = flags.DEFINE_string("encoding", "utf-8", "Text encoding of the input files "
                                "(e.g. gb18030, big5, shift_jis).")
_NFKC = flags.DEFINE_bool("nfkc", False, "Unicode NFKC (full-width ASCII -> ASCII) before "
                          "training; prepare the data with the same setting.")
_SEMICOLON = flags.DEFINE_bool("semicolon_ends_sentence", False, "；ends a CJK sentence.")
_MAX = flags.DEFINE_integer("max_sentences", 2_000_000, "Sentences sampled for training "
                            "(SentencePiece).")
_COVERAGE = flags.DEFINE_float("character_coverage", None, "SentencePiece character coverage "
                               "(default: 0.9995 for CJK-heavy text, else 1.0).")
_LOWER = flags.DEFINE_bool("lowercase", True, "WordPiece: lowercase (an uncased vocabulary).")


def main(argv):
  del argv
  skips = corpus.SkipLog()
  rules = text_scripts.TextRules(semicolon_ends_sentence=_SEMICOLON.value, nfkc=_NFKC.value)
  # CorpusError / TokenizerError (ValueErrors) reach launch.cli: one `error:` line.
  docs = corpus.iter_text_documents(_INPUT.value, _FORMAT.value, skips, _ENCODING.value, rules)
  sentences = (s for d in docs for s in d.sentences)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if _TYPE.value == "wordpiece":
      path = train_wordpiece(sentences, _OUTPUT.value, _VOCAB.value, lowercase=_LOWER.value)
    else:
      path = train_sentencepiece(sentences, _OUTPUT.value, _VOCAB.value, _TYPE.value,
                                 _MAX.value, character_coverage=_COVERAGE.value,
                                 nfkc=_NFKC.value)
  for w in caught:
    print(f"warning: {w.message}", file=sys.stderr)
  tok = load_tokenizer(path)
  for reason, entry in skips.to_json().items():
    print(f"skipped {entry['count']} ({reason}), e.g. {entry['examples'][:2]}", file=sys.stderr)
  chosen = read_tokenizer_manifest(_OUTPUT.value)
  print(f"wrote {path}: vocab_size={tok.vocab_size} identity={tok.identity} "
        f"cjk_fraction={chosen.get('cjk_fraction')}"
        + "".join(f" {k}={chosen[k]}" for k in ("character_coverage", "normalization_rule_name",
                                                "add_dummy_prefix") if k in chosen))


if __name__ == "__main__":
  cli.run(main)
