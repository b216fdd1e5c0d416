"""Fine-tuning end to end on tiny random checkpoints and small learnable tasks."""
import json
import os

import numpy as np
import pytest

from bert_jax.finetune import loop as finetune
from tests.helpers import finetune as F
from tests.helpers import launchers


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return F.make_hf_dir(str(tmp_path_factory.mktemp("init")))


def _config(tmp_path, hf_dir, **kw):
  base = dict(task="classification", init_from=hf_dir, output_dir=str(tmp_path / "out"),
              max_seq_length=16, learning_rate=5e-3, num_epochs=5, log_every_steps=1000,
              length_buckets=1)  # one width: not a bucket test (test_buckets.py is)
  return finetune.FinetuneConfig(**{**base, **kw})


def test_classification_learns_exports_and_predicts(tmp_path, hf_dir):
  train = F.write_tsv(tmp_path / "train.tsv", F.sentiment_rows(256, 0))
  dev = F.write_tsv(tmp_path / "dev.tsv", F.sentiment_rows(64, 1))
  cfg = _config(tmp_path, hf_dir, train_file=str(train), eval_file=str(dev),
                predict_file=str(dev), num_epochs=6)
  results = F.run(cfg, all_devices=True)  # data parallel over the 8 test devices
  out = tmp_path / "out"
  assert results["eval_accuracy"] >= 0.9, results["history"]  # chance: 0.5
  assert results["trainable_parameters"] == results["total_parameters"]
  # 256 examples in batches of 32 of one width: 8 steps an epoch.
  per_epoch = results["history"][0]["step"]
  assert len(results["history"]) == 6 and results["train_steps"] == 6 * per_epoch
  assert per_epoch == 8
  # Training throughput as Trainer counts it: rows x epochs over the epochs' train time.
  runtime = sum(h["train_seconds"] for h in results["history"])
  np.testing.assert_allclose(results["train_runtime"], runtime, rtol=1e-9)
  np.testing.assert_allclose(results["train_samples_per_second"], 256 * 6 / runtime, rtol=1e-9)
  saved = F.read_json(out / "eval_results.json")
  assert saved["eval_accuracy"] == results["eval_accuracy"]
  assert saved["best_epoch"] == max(range(1, 7), key=lambda e: (
      saved["history"][e - 1]["accuracy"], -e))
  assert "pos" in (out / "eval_report.txt").read_text()
  preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
  assert len(preds) == 64 and preds[0]["line"] == 2
  assert np.mean([p["prediction"] == p["label"] for p in preds]) == results["eval_accuracy"]
  assert not any(p.endswith((".tmp", ".old")) for p in os.listdir(out))

  # The best model is a transformers directory: same predictions from PyTorch.
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer
  best = str(out / "best_model")
  hf_model = AutoModelForSequenceClassification.from_pretrained(best).eval()
  tok = AutoTokenizer.from_pretrained(best)
  assert hf_model.config.id2label == {0: "neg", 1: "pos"}
  texts = [p["text"] for p in preds[:16]]
  enc = tok(texts, padding="max_length", max_length=16, return_tensors="pt")
  with torch.no_grad():
    probs = torch.softmax(hf_model(**enc).logits, -1).numpy()
  ours = np.array([[p["probabilities"]["neg"], p["probabilities"]["pos"]] for p in preds[:16]])
  np.testing.assert_allclose(probs, ours, atol=1e-4)

  # Without a train file (and on one device): the exported head labels new input the same way.
  again = F.run(finetune.FinetuneConfig(
      task="classification", init_from=best, output_dir=str(tmp_path / "again"),
      eval_file=str(dev), max_seq_length=16))
  assert again["eval_accuracy"] == results["eval_accuracy"]


def test_ner_learns_entities(tmp_path, hf_dir):
  train = F.write_conll(tmp_path / "train.conll", F.ner_sentences(256, 0))
  dev = F.write_conll(tmp_path / "dev.conll", F.ner_sentences(128, 1))
  plain = F.write_conll(tmp_path / "test.conll", F.ner_sentences(8, 2), with_tags=False)
  results = F.run(_config(tmp_path, hf_dir, task="ner", train_file=str(train),
                                 eval_file=str(dev), predict_file=str(plain), num_epochs=4,
                                 max_seq_length=24))
  # An all-'O' tagger scores entity F1 0.
  assert results["eval_f1"] >= 0.8, results["history"]
  lines = (tmp_path / "out" / "predictions.conll").read_text().split("\n\n")
  first = [l.split() for l in lines[0].splitlines()]
  tokens, _ = F.ner_sentences(8, 2)[0]
  assert [t for t, _ in first] == tokens
  assert all(tag in ("O", "B-PER", "I-PER", "B-LOC", "B-MISC") for _, tag in first)
  report = (tmp_path / "out" / "eval_report.txt").read_text()
  assert "PER" in report and "micro avg" in report


def test_launcher_regression_end_to_end(tmp_path, hf_dir):
  rng = np.random.default_rng(0)
  rows = []
  for _ in range(64):
    k = int(rng.integers(0, 4))
    words = list(rng.choice(F.FILLER, 3)) + ["good"] * k
    rows.append((" ".join(words), f"{k / 3:.3f}", "x"))
  header = ("a", "score", "b")
  train = F.write_tsv(tmp_path / "train.tsv", rows, header)
  dev = F.write_tsv(tmp_path / "dev.tsv", rows[:32], header)
  out = tmp_path / "out"
  argv = ["--task=regression", f"--init_from={hf_dir}", f"--train_file={train}",
          f"--eval_file={dev}", f"--output_dir={out}", "--text_column=a",
          "--label_column=score", "--max_seq_length=12", "--num_epochs=1", "--batch_size=16",
          "--eval_batch_size=16", "--learning_rate=1e-3", "--length_buckets=1"]
  # The launcher in this process (tests/helpers/launchers.py sets its flags up and down).
  result = launchers.run("launch.finetune", argv)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  stdout = result.stdout
  line = json.loads(stdout.strip().splitlines()[-1])
  assert line["task"] == "regression" and line["train_steps"] == 4
  assert np.isfinite(line["eval_pearson"]) and "eval_spearman" in line
  assert F.read_json(out / "eval_results.json")["eval_pearson"] == line["eval_pearson"]
  config = F.read_json(out / "best_model" / "config.json")
  assert config["problem_type"] == "regression" and config["id2label"] == {"0": "LABEL_0"}


def test_bad_input_fails_before_writing(tmp_path, hf_dir):
  train = F.write_tsv(tmp_path / "train.tsv", F.sentiment_rows(8, 0))
  dev = F.write_tsv(tmp_path / "dev.tsv", [("w1 w2", "pos"), ("w3", "maybe")])
  with pytest.raises(ValueError, match=r"dev\.tsv:3: label 'maybe' is not in the label set"):
    F.run(_config(tmp_path, hf_dir, train_file=str(train), eval_file=str(dev)))
  assert not (tmp_path / "out").exists()
  not_bert = tmp_path / "not_bert"
  not_bert.mkdir()
  (not_bert / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(ValueError, match=r"not_bert/config\.json: model_type is 'gpt2'"):
    F.run(_config(tmp_path, str(not_bert), train_file=str(train), eval_file=str(train)))
  with pytest.raises(ValueError, match="id2label"):
    F.run(_config(tmp_path, hf_dir, eval_file=str(train)))
  with pytest.raises(ValueError, match="no task head"):
    F.run(_config(tmp_path, hf_dir, eval_file=str(train), labels=("neg", "pos")))
  assert not (tmp_path / "out").exists()
