"""A suite end to end on small files in the benchmarks' layouts: GLUE's MRPC (two metrics)
and STS-B (regression) trained, a missing task and a malformed one marked as not run, the
table, the submission files, and a rerun that reruns nothing; CLUE's AFQMC in Chinese."""
import json
import os
import shutil

import pytest

from bert_jax.finetune import suite as suite_lib
from data_pipeline.finetune import suites
from data_pipeline.finetune import tasks as text_tasks
from tests.helpers import finetune as F
from tests.helpers import suites as S

TINY = dict(batch_size=8, eval_batch_size=8, num_epochs=1, max_seq_length=32, length_buckets=1,
            log_every_steps=1000)


def _config(root, init, out, suite, tasks):
  return suite_lib.SuiteConfig(suite, str(root), init, str(out), tasks=tasks,
                               learning_rates=(1e-3,), seeds=(0,), finetune=TINY)


def test_glue_runs_scores_submits_and_resumes(tmp_path, capsys):
  root = tmp_path / "glue_data"
  S.write_glue(str(root))
  shutil.rmtree(root / "QNLI")                                    # a task without its files
  (root / "RTE" / "train.tsv").write_text("premise\thypothesis\tlabel\na\tb\tentailment\n")
  init = F.random_hf_dir(str(tmp_path / "init"), F.SPECIALS + F.WORDS)
  cfg = _config(root, init, tmp_path / "out", "glue", ("MRPC", "STS-B", "QNLI", "RTE"))
  results = suite_lib.run_suite(cfg, suites.get("glue"), text_tasks.make_text_task)
  out = tmp_path / "out"
  printed = capsys.readouterr().out
  assert "[1/4] MRPC: run 1/1 (learning rate 0.001, seed 0)" in printed
  assert "[3/4] QNLI: NOT RUN: QNLI: no folder QNLI in" in printed

  mrpc, stsb = results["tasks"]["MRPC"], results["tasks"]["STS-B"]
  assert mrpc["status"] == stsb["status"] == "done"
  # MRPC's score is the mean of F1 and accuracy (x100), from the run's eval metrics.
  metrics = mrpc["runs"][0]["metrics"]["dev"]
  assert mrpc["best"]["values"] == pytest.approx({"F1": 100 * metrics["f1"],
                                                  "Acc": 100 * metrics["accuracy"]})
  assert mrpc["best"]["score"] == pytest.approx(50 * (metrics["f1"] + metrics["accuracy"]))
  assert stsb["best"]["values"]["Spearman"] == pytest.approx(
      100 * stsb["runs"][0]["metrics"]["dev"]["spearman"])
  assert results["failed"].keys() == {"QNLI", "RTE"}
  assert "expected the columns sentence1, sentence2, label" in results["failed"]["RTE"]
  assert not results["average"]["complete"]

  table = (out / "results.md").read_text()
  assert "| MRPC (F1/Acc) |" in table and "| QNLI | — | — | — | yes | NOT RUN: QNLI: no folder" in table
  assert "incomplete (2 of 9 tasks;" in table  # never presented as a GLUE score
  assert json.loads((out / "results.json").read_text())["tasks"]["STS-B"]["status"] == "done"
  mrpc_tsv = (out / "submission" / "MRPC.tsv").read_text().splitlines()
  assert mrpc_tsv[0] == "index\tprediction" and len(mrpc_tsv) == 5
  assert {line.split("\t")[1] for line in mrpc_tsv[1:]} <= {"0", "1"}
  assert os.path.isdir(out / "MRPC" / "runs" / "lr0.001-seed0" / "best_model")
  with capsys.disabled():
    print(table)  # the table docs/suites.md shows (pytest -s)

  # Rerun: the finished tasks are read back, not rerun.
  again = suite_lib.run_suite(cfg, suites.get("glue"), text_tasks.make_text_task)
  assert "MRPC: finished earlier" in capsys.readouterr().out
  assert again["tasks"]["MRPC"]["best"] == mrpc["best"]


def test_clue_afqmc_in_chinese(tmp_path):
  root = tmp_path / "clue_data"
  S.write_clue(str(root))
  init = F.random_hf_dir(str(tmp_path / "init"), S.chinese_vocab())
  cfg = _config(root, init, tmp_path / "out", "clue", ("AFQMC",))
  results = suite_lib.run_suite(cfg, suites.get("clue"), text_tasks.make_text_task)
  afqmc = results["tasks"]["AFQMC"]
  assert afqmc["status"] == "done" and afqmc["columns"] == ["Acc"]
  lines = (tmp_path / "out" / "submission" / "afqmc_predict.json").read_text().splitlines()
  assert [json.loads(l)["id"] for l in lines] == [0, 1, 2, 3]
  assert {json.loads(l)["label"] for l in lines} <= {"0", "1"}
  assert results["average"]["ran"] == ["AFQMC"] and not results["average"]["complete"]
