"""A small learnable extractive-QA task in SQuAD v2.0 layout, over the tiny test vocabulary.

Each context is 16-36 filler words; most hold one name: a person ("mary", or
"john smith", two words) or a place ("paris", "rome", "oslo"), and its question
asks for it ("w0 w1": who?, "w2 w3": where?). A share `unanswerable` of the
contexts holds no name: their question is unanswerable (is_impossible, SQuAD
v2.0). A tiny randomly initialised BERT learns it in a few dozen steps.
"""
import json

import numpy as np

from tests.helpers import finetune as F

WHO, WHERE = "w0 w1", "w2 w3"


def qa_paragraphs(n, seed, unanswerable=0.0):
  rng = np.random.default_rng(seed)
  paragraphs = []
  fillers = F.FILLER[4:]  # w0-w3 are the question words
  for i in range(n):
    words = [str(w) for w in rng.choice(fillers, size=int(rng.integers(16, 37)))]
    who = bool(rng.integers(2))
    qa = {"id": f"q{i}", "question": WHO if who else WHERE}
    if rng.random() < unanswerable:
      context = " ".join(words)
      qa.update(is_impossible=True, answers=[])
    else:
      name = (("john smith" if rng.random() < 0.5 else "mary") if who
              else str(rng.choice(F.PLACES)))
      words.insert(int(rng.integers(len(words) + 1)), name)
      context = " ".join(words)
      start = f" {context} ".index(f" {name} ")  # the name as whole words
      qa.update(is_impossible=False, answers=[{"text": name, "answer_start": start}])
    paragraphs.append({"context": context, "qas": [qa]})
  return paragraphs


def write_squad(path, paragraphs, version="v2.0"):
  with open(path, "w") as f:
    json.dump({"version": version, "data": [{"title": "synthetic", "paragraphs": paragraphs}]}, f)
  return str(path)
