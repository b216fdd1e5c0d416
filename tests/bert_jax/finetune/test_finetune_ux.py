"""What a fine-tuning user sees on real-shaped Chinese QA data: the metric family chosen
and stored, odd rows kept for scoring, train-only runs, the options a fine-tuned model
directory records and prediction reuses, the [UNK] rate, the checkpoint report."""
import contextlib
import io
import json
import logging
import os

import numpy as np
import pytest

from bert_jax.finetune import loop as finetune
from tests.helpers import finetune as F
from tests.helpers import qa as Q

PLACES = ["北京", "上海", "广州", "深圳"]
FILLER = list("这部电影的故事我们昨天在家里一起看了觉得非常有点")
QUESTION = "他们在哪里"


def _vocab():
  chars = sorted(set("".join(PLACES + FILLER) + QUESTION + "，。？"))
  return F.SPECIALS + chars


@pytest.fixture(scope="module")
def zh_dir(tmp_path_factory):
  """A tiny random checkpoint with a bert-base-chinese-like vocabulary (a token per
  character)."""
  directory = F.random_hf_dir(str(tmp_path_factory.mktemp("zh_qa")))
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(_vocab() + [f"[unused{i}]" for i in range(len(F.WORDS) - len(_vocab())
                                                               + len(F.SPECIALS))]) + "\n")
  return directory


def zh_paragraphs(n, seed, prefix="Q"):
  rng = np.random.default_rng(seed)
  paragraphs = []
  for i in range(n):
    chars = [str(c) for c in rng.choice(FILLER, size=int(rng.integers(6, 14)))]
    place = str(rng.choice(PLACES))
    at = int(rng.integers(len(chars) + 1))
    context = "".join(chars[:at]) + place + "".join(chars[at:]) + "。"
    paragraphs.append({"context": context, "qas": [{
        "id": f"{prefix}_{i}", "question": QUESTION,
        "answers": [{"text": place, "answer_start": at}]}]})
  return paragraphs


def _config(tmp_path, init, **kw):
  base = dict(task="qa", init_from=init, output_dir=str(tmp_path / "out"), max_seq_length=32,
              doc_stride=16, max_query_length=8, learning_rate=5e-3, num_epochs=1,
              length_buckets=1, log_every_steps=1000, batch_size=16, eval_batch_size=16)
  return finetune.FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, zh_dir):
  """A Chinese QA model fine-tuned with non-default windows: (directory, results, stdout)."""
  tmp = tmp_path_factory.mktemp("zh_trained")
  train = Q.write_squad(tmp / "train.json", zh_paragraphs(32, 0))
  dev = Q.write_squad(tmp / "dev.json", zh_paragraphs(8, 1, "D"))
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    results = F.run(_config(tmp, zh_dir, train_file=train, eval_file=dev))
  return tmp, results, out.getvalue()


def test_qa_metric_family_is_printed_and_stored_with_the_organisers_names(trained):
  tmp, results, stdout = trained
  assert "qa metric: cmrc (auto: the contexts are mostly CJK" in stdout
  stored = F.read_json(tmp / "out" / "eval_results.json")
  assert stored["qa_metric"] == "cmrc" and results["qa_metric"] == "cmrc"
  assert stored["eval_EM"] == stored["eval_exact"] and stored["eval_F1"] == stored["eval_f1"]
  assert stored["eval_AVERAGE"] == pytest.approx((stored["eval_EM"] + stored["eval_F1"]) / 2)
  assert stored["history"][0]["qa_metric"] == "cmrc"


def test_predicting_reports_the_task_head_as_loaded_not_ignored(trained, tmp_path, caplog):
  tmp, _, _ = trained
  questions = tmp_path / "q.jsonl"
  questions.write_text(json.dumps({"id": "x", "question": QUESTION,
                                   "context": "我们昨天在北京看了电影。"}, ensure_ascii=False) + "\n",
                       encoding="utf-8")
  caplog.set_level(logging.INFO)
  F.run(_config(tmp_path, str(tmp / "out" / "best_model"), predict_file=str(questions)))
  text = caplog.text
  assert "loaded " in text and "task head qa_outputs: loaded from the checkpoint" in text
  assert "ignored checkpoint keys" not in text and "qa_outputs.weight" not in text


def test_train_only_fine_tuning_keeps_the_last_epoch(tmp_path, zh_dir, capsys):
  """No eval file: the epochs run, the last epoch's model is best_model, said so."""
  train = Q.write_squad(tmp_path / "train.json", zh_paragraphs(16, 2))
  results = F.run(_config(tmp_path, zh_dir, train_file=train, num_epochs=2))
  assert "no eval_file: trained 2 epoch(s) without evaluation" in capsys.readouterr().out
  out = tmp_path / "out"
  stored = F.read_json(out / "eval_results.json")
  assert stored["best_epoch"] == 2 and stored["metric_for_best"] is None
  assert not [k for k in stored if k.startswith("eval_")]
  assert [h["epoch"] for h in results["history"]] == [1, 2]
  assert (out / "best_model" / "model.safetensors").exists()
  assert F.read_json(out / "best_model" / "finetune.json")["task"] == "qa"


def test_prediction_takes_the_model_directorys_recorded_options(trained, tmp_path, capsys):
  """best_model/finetune.json records the QA windows, max length and metric; predicting
  from it without --train_file uses them where no flag is given, and says which."""
  from absl import flags

  from tests.helpers import launchers

  tmp, _, _ = trained
  best = str(tmp / "out" / "best_model")
  options = F.read_json(tmp / "out" / "best_model" / "finetune.json")["options"]
  assert options["doc_stride"] == 16 and options["max_seq_length"] == 32
  assert options["max_query_length"] == 8 and options["qa_metric"] == "auto"
  assert options["n_best_size"] == 20 and options["metric_for_best"] == "f1"
  questions = tmp_path / "q.jsonl"
  questions.write_text(json.dumps({"id": "x", "question": QUESTION,
                                   "context": "我们昨天在上海看了电影。"}, ensure_ascii=False) + "\n",
                       encoding="utf-8")
  argv = ["finetune", "--task=qa", f"--init_from={best}", f"--predict_file={questions}",
          f"--output_dir={tmp_path / 'out'}", "--max_query_length=6", "--length_buckets=1"]
  # The launcher imported afresh, beside any launcher another test imported in this process.
  with launchers.loaded("launch.finetune", argv[1:]) as launcher:
    flags.FLAGS(argv)
    cfg = launcher.config_from_flags()
  line = capsys.readouterr().out
  assert f"options from {best}/finetune.json" in line
  assert "doc_stride=16" in line and "max_seq_length=32" in line
  assert "max_query_length" not in line  # given explicitly
  assert (cfg.doc_stride, cfg.max_seq_length, cfg.max_query_length) == (16, 32, 6)
  # The QA default (384 tokens) would not even fit this model's 64 positions.
  results = F.run(cfg)
  assert set(F.read_json(tmp_path / "out" / "predictions.json")) == {"x"}
  assert results["task"] == "qa"
  # A training run chooses its own options.
  train_cfg = _config(tmp_path, best, train_file="t.json", doc_stride=128)
  assert train_cfg.with_model_options(options, set()) == (train_cfg, [])


def test_odd_rows_are_listed_left_out_of_training_and_still_scored(tmp_path, zh_dir, caplog):
  """An empty question (as TRIAL_776_QUERY_4 of the public CMRC 2018 trial file) and an
  answer that misses its offset stop nothing: a warning with the count and the first
  ids, every id in skipped_rows.json, and the eval file's odd question is predicted and
  scored."""
  train_paragraphs = zh_paragraphs(16, 3)
  train_paragraphs[2]["qas"][0]["question"] = ""
  train_paragraphs[5]["qas"][0]["answers"][0]["answer_start"] += 1
  dev_paragraphs = zh_paragraphs(6, 4, "TRIAL")
  dev_paragraphs[1]["qas"][0]["question"] = ""
  train = Q.write_squad(tmp_path / "train.json", train_paragraphs)
  dev = Q.write_squad(tmp_path / "dev.json", dev_paragraphs)
  caplog.set_level(logging.WARNING)
  results = F.run(_config(tmp_path, zh_dir, train_file=train, eval_file=dev))
  assert "train.json: 2 question(s) left out of training, still scored" in caplog.text
  assert "Q_2 (empty question)" in caplog.text and "Q_5 (no verified answer" in caplog.text
  skipped = F.read_json(tmp_path / "out" / "skipped_rows.json")
  assert [r["id"] for r in skipped[train]] == ["Q_2", "Q_5"]
  assert skipped[train][0]["where"].endswith("data[0].paragraphs[2].qas[0]")
  assert [(r["id"], r["why"]) for r in skipped[dev]] == [("TRIAL_1", "empty question")]
  predictions = F.read_json(tmp_path / "out" / "eval_predictions.json")
  assert set(predictions) == {f"TRIAL_{i}" for i in range(6)}
  assert results["num_eval_examples"] == 6 and results["eval_total"] == 6


def test_the_unk_rate_of_each_file_is_reported_and_warned_above_prepares_threshold(
    trained, tmp_path, capsys):
  """Chinese QA with a vocabulary that covers it: a line per file, ~0% [UNK]; with an
  English vocabulary (every Chinese character [UNK]): the same line, as a warning."""
  from data_pipeline.text import tokenizer as tokenizer_lib

  tmp, _, stdout = trained
  for name in ("train.json", "dev.json"):
    assert f"{tmp / name}: 0.00% of " in stdout
  assert "warning:" not in stdout
  train = Q.write_squad(tmp_path / "train.json", zh_paragraphs(8, 5))
  english = F.random_hf_dir(str(tmp_path / "en"))
  F.run(_config(tmp_path, english, train_file=train))
  lines = [ln for ln in capsys.readouterr().out.splitlines() if "[UNK]" in ln]
  assert len(lines) == 1 and lines[0].startswith(f"warning: {train}: ")
  rate = float(lines[0].split(": ")[2].split("%")[0]) / 100
  assert rate > 0.9 > tokenizer_lib.UNK_RATE_WARNING
  assert f"(more than {tokenizer_lib.UNK_RATE_WARNING:.0%})" in lines[0]
