"""Helpers for the data_pipeline tests (imported as `from tests.helpers.data import ...`; conftest.py holds the fixtures).

The synthetic dataset is made through the real prepare path with a WordPiece vocabulary of
made-up words "tN" (N = the token id), so every token id in a batch tells which document
it came from: document d uses only ids in [base(d), base(d) + WORDS_PER_DOC).
"""

import json

import numpy as np


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NUM_DOCS = 60
WORDS_PER_DOC = 40
FIRST_WORD_ID = len(SPECIALS)
VOCAB_SIZE = FIRST_WORD_ID + NUM_DOCS * WORDS_PER_DOC


def doc_of_token(ids):
  """Document that produced each (non-special) token id."""
  return (np.asarray(ids) - FIRST_WORD_ID) // WORDS_PER_DOC


def write_vocab(path):
  with open(path, "w") as f:
    f.write("\n".join(SPECIALS + [f"t{i}" for i in range(FIRST_WORD_ID, VOCAB_SIZE)]) + "\n")
  return path


def write_synthetic_corpus(path, seed=0, num_docs=NUM_DOCS):
  """BERT format: documents of 8-60 sentences (every 20th: one) of 1-24 words, ids from the doc's range."""
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for d in range(num_docs):
      base = FIRST_WORD_ID + d * WORDS_PER_DOC
      num_sentences = 1 if d % 20 == 7 else int(rng.integers(8, 61))
      for _ in range(num_sentences):
        words = rng.integers(base, base + WORDS_PER_DOC, size=int(rng.integers(1, 25)))
        f.write(" ".join(f"t{w}" for w in words) + "\n")
      f.write("\n")
  return path


def squad_file(paragraphs, path, version=None):
  """A SQuAD-layout JSON file of `paragraphs` (non-ASCII kept); returns its path."""
  root = {"data": [{"title": "t", "paragraphs": paragraphs}]}
  if version:
    root["version"] = version
  path.write_text(json.dumps(root, ensure_ascii=False))
  return str(path)


def qa_entry(qid, question, context, answer=None, **extra):
  """A SQuAD question whose answer (if any) is found in `context` by text."""
  answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
  return {"id": qid, "question": question, "answers": answers, **extra}
