"""Trains a SentencePiece tokenizer with BERT's special tokens.

python -m launch.train_tokenizer --input=GLOB[,GLOB...] --output_dir=DIR --vocab_size=N \
    [--model_type=unigram|bpe] [--text_format=bert|lines|paragraphs]
"""
import sys

from absl import flags

from data_pipeline import corpus
from data_pipeline.tokenizers import load_tokenizer, train_sentencepiece
from launch import cli

_INPUT = flags.DEFINE_string("input", None, "Comma-separated globs of text files.", required=True)
_OUTPUT = flags.DEFINE_string("output_dir", None, "Where spm.model goes.", required=True)
_VOCAB = flags.DEFINE_integer("vocab_size", 32000, "Vocabulary size, specials included.")
_TYPE = flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "SentencePiece type.")
_FORMAT = flags.DEFINE_enum("text_format", "bert", list(corpus.TEXT_FORMATS), "Input layout.")
_MAX = flags.DEFINE_integer("max_sentences", 2_000_000, "Sentences sampled for training.")


def main(argv):
  del argv
  skips = corpus.SkipLog()
  docs = corpus.iter_text_documents(_INPUT.value, _FORMAT.value, skips)
  path = train_sentencepiece((s for d in docs for s in d.sentences), _OUTPUT.value,
                             _VOCAB.value, _TYPE.value, _MAX.value)
  tok = load_tokenizer(path)
  for reason, entry in skips.to_json().items():
    print(f"skipped {entry['count']} ({reason}), e.g. {entry['examples'][:2]}", file=sys.stderr)
  print(f"wrote {path}: vocab_size={tok.vocab_size} identity={tok.identity}")


if __name__ == "__main__":
  cli.run(main)
