"""The transformers side of the QA parity benchmark (bert_jax/finetune/qa_reference.py):
run_qa's labels agree with ours on real SQuAD text, its post-processing returns the
labelled answer, and the per-seed table's means and spreads."""
import json
import os

import numpy as np
import pytest

from bert_jax.finetune import config as finetune_config
from bert_jax.finetune import qa_metrics
from bert_jax.finetune import qa_reference
from data_pipeline.finetune import tasks as text_tasks
from tests.helpers import REPO

_SQUAD = os.path.join(REPO, "tests", "data", "squad_v1_dev_sample.json")


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
  """A WordPiece vocabulary of the sample's own words (BERT's lower-casing, accent and
  punctuation splitting), so that the real text tokenizes without [UNK]."""
  from tokenizers import normalizers, pre_tokenizers  # pylint: disable=import-outside-toplevel
  normalize = normalizers.BertNormalizer(lowercase=True)
  split = pre_tokenizers.BertPreTokenizer()
  words = set()
  for q in qa_reference.read_squad(_SQUAD):
    for text in (q.question, q.context):
      words.update(w for w, _ in split.pre_tokenize_str(normalize.normalize_str(text)))
  directory = tmp_path_factory.mktemp("vocab")
  with open(directory / "vocab.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)) + "\n")
  with open(directory / "config.json", "w", encoding="utf-8") as f:
    json.dump({"model_type": "bert"}, f)
  return str(directory)


def test_run_qa_labels_equal_ours_and_post_processing_returns_them(vocab_dir):
  import transformers  # pylint: disable=import-outside-toplevel
  questions = qa_reference.read_squad(_SQUAD)
  tokenizer = transformers.BertTokenizerFast(os.path.join(vocab_dir, "vocab.txt"))
  seq = 384
  theirs = qa_reference.train_features(tokenizer, questions, seq, 128)
  enc = qa_reference.encode_windows(tokenizer, questions, seq, 128)
  options = finetune_config.FinetuneConfig(task="qa", init_from=vocab_dir, output_dir="-",
                                           doc_stride=128).text_options()
  text = text_tasks.make_text_task("qa", **options)
  ours = text.encode(_SQUAD, text.read(_SQUAD, True), text.load_tokenizer(vocab_dir), [], seq)
  first_ours = {}
  for i, e in enumerate(ours.alignment.example_index):
    first_ours.setdefault(int(e), i)
  first_theirs = {}
  for i, e in enumerate(enc["overflow_to_sample_mapping"]):
    first_theirs.setdefault(int(e), i)
  assert len(first_theirs) == len(questions) == len(first_ours)
  start = np.full((len(theirs), seq), -10.0)
  end = np.full((len(theirs), seq), -10.0)
  for e in range(len(questions)):
    i, j = first_ours[e], first_theirs[e]
    np.testing.assert_array_equal(ours.arrays["input_ids"][i], theirs[j]["input_ids"])
    label = (theirs[j]["start_positions"], theirs[j]["end_positions"])
    assert label == (int(ours.arrays["start_positions"][i]),
                     int(ours.arrays["end_positions"][i])), questions[e].id
    assert label != (0, 0), questions[e].id  # every sample answer fits its first window
    start[j, label[0]], end[j, label[1]] = 10.0, 10.0
  predicted = qa_reference.best_spans(enc, questions, start, end)
  golds = qa_reference.gold_answers(questions)
  # The labelled tokens' characters are the first gold answer, up to SQuAD's normalisation.
  assert qa_metrics.squad_v1_evaluate(golds, predicted)["exact_match"] == 100.0
  assert all(predicted[q.id] in q.context for q in questions)


def test_summary_is_each_sides_mean_and_sample_spread_and_the_table_shows_it():
  runs = [{"side": "ours", "seed": 0, "exact_match": 30.0, "f1": 40.0},
          {"side": "ours", "seed": 1, "exact_match": 34.0, "f1": 44.0},
          {"side": "transformers", "seed": 0, "exact_match": 31.0, "f1": 41.0}]
  summary = qa_reference.summarize(runs)
  assert summary["ours"] == {"runs": 2, "exact_match_mean": 32.0, "exact_match_std":
                             pytest.approx(8 ** 0.5), "f1_mean": 42.0,
                             "f1_std": pytest.approx(8 ** 0.5)}
  assert summary["transformers"]["f1_std"] is None  # one run: no spread
  lines = qa_reference.format_table(runs, summary).splitlines()
  assert lines[1].split() == ["0", "30.00", "40.00", "31.00", "41.00"]
  assert lines[2].split() == ["1", "34.00", "44.00", "-", "-"]
  assert lines[3].split() == ["mean", "32.00", "42.00", "31.00", "41.00"]
  assert lines[4].split() == ["std", "2.83", "2.83", "-", "-"]


def test_a_finished_run_is_reused_only_for_the_same_recipe(tmp_path):
  recipe = qa_reference.Recipe(num_epochs=6, learning_rate=2e-4, batch_size=16,
                               max_seq_length=256, doc_stride=128)
  path = str(tmp_path / "result.json")
  assert qa_reference.load_result(path, recipe) is None
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"f1": 40.0, "recipe": qa_reference.dataclasses.asdict(recipe)}, f)
  assert qa_reference.load_result(path, recipe)["f1"] == 40.0
  other = qa_reference.dataclasses.replace(recipe, num_epochs=2)
  assert qa_reference.load_result(path, other) is None
