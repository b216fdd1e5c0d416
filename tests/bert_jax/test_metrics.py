"""Pretraining metrics: accumulation and writers (FLOPs: test_flops.py)."""

import json
import math

import jax
import numpy as np
import pytest

from bert_jax import metrics


def test_mean_accumulator_and_eval_summary():
  acc = metrics.MeanAccumulator()
  acc.add({"loss": jax.numpy.asarray(1.0)})
  acc.add({"loss": jax.numpy.asarray(2.0)})
  assert acc.result() == {"loss": 1.5}
  assert len(acc) == 0
  s = metrics.summarise_eval(dict(mlm_loss_sum=6.0, mlm_correct=1.0, mlm_weight=4.0,
                                  nsp_loss_sum=1.0, nsp_correct=3.0, num_sequences=4.0))
  assert s == {"eval_mlm_loss": 1.5, "eval_mlm_accuracy": 0.25, "eval_nsp_loss": 0.25,
               "eval_nsp_accuracy": 0.75, "eval_perplexity": math.exp(1.5)}


def test_unigram_baseline():
  u = metrics.UnigramBaseline(5)
  u.add_train({"masked_lm_ids": np.array([[1, 1, 2, 0]]),
               "masked_lm_weights": np.array([[1, 1, 1, 0]], np.float32)})
  u.add_eval({"masked_lm_ids": np.array([[1, 3, 3, 3]]),
              "masked_lm_weights": np.array([[1, 1, 1, 1]], np.float32)})
  r = u.result()
  assert r["unigram_mlm_accuracy"] == 0.25
  probs = np.array([1, 3, 2, 1, 1]) / 8  # add-one smoothed train counts
  np.testing.assert_allclose(r["unigram_mlm_loss"],
                             -(np.log(probs[1]) + 3 * np.log(probs[3])) / 4)


def test_writer_keeps_full_precision_and_writes_events(tmp_path):
  w = metrics.MetricsWriter(str(tmp_path))
  w.write(3, {"loss": 0.1234567890123456789, "eval_mlm_accuracy": np.float32(0.5)})
  w.write(6, {"loss": 1 / 3})
  w.close()
  with open(tmp_path / "metrics.jsonl") as f:
    lines = [json.loads(l) for l in f]
  assert lines == [{"step": 3, "loss": 0.1234567890123456789, "eval_mlm_accuracy": 0.5},
                   {"step": 6, "loss": 1 / 3}]
  assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
  assert metrics.plot_curves(str(tmp_path)).endswith("curves.png")
  assert (tmp_path / "curves.png").stat().st_size > 1000


def test_disabled_writer_writes_nothing(tmp_path):
  w = metrics.MetricsWriter(str(tmp_path / "x"), enabled=False)
  w.write(1, {"loss": 1.0})
  assert not (tmp_path / "x").exists()
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    metrics.read_metrics(str(tmp_path))


def test_progress_line():
  line = metrics.progress_line(10, 100, {"loss": 2.0, "mlm_accuracy": 0.5, "nsp_accuracy": 0.75},
                               seq_per_sec=12.5, tokens_per_sec=1600, mfu_value=0.123, eta_s=3725)
  assert line == ("step 10/100 | loss 2.0000 | mlm_acc 0.5000 | nsp_acc 0.7500 | 12.5 seq/s | "
                  "1600 tok/s | MFU 12.3% | ETA 1:02:05")


def test_progress_reporter_counts_useful_work():
  """seq/s counts instances and tok/s real tokens (not rows x L); MFU follows the real
  tokens; the step counts become rates and are not written as metrics."""
  from bert_jax import progress

  class Writer:
    def __init__(self):
      self.records = []

    def write(self, step, values):
      self.records.append((step, dict(values)))

  writer = Writer()
  reporter = progress.ProgressReporter(writer, total_steps=10, global_batch_size=4, seq_len=128,
                                       flops_per_sequence=1280.0, peak_flops=1e6, printing=False)
  for _ in range(3):
    reporter.step_done()
  # 4 packed rows of 128 held 10 instances and 384 real tokens per step.
  reporter.log(3, {"loss": 1.0, progress.INSTANCES_KEY: 10.0, progress.REAL_TOKENS_KEY: 384.0})
  step, record = writer.records[-1]
  assert step == 3 and set(record) == {"loss", "seq_per_sec", "tokens_per_sec", "mfu"}
  steps_per_sec = record["seq_per_sec"] / 10.0
  np.testing.assert_allclose(record["tokens_per_sec"], 384.0 * steps_per_sec, rtol=1e-12)
  np.testing.assert_allclose(record["mfu"], 384.0 * steps_per_sec * 10.0 / 1e6, rtol=1e-12)
  # Without the counts (older callers), full rows are counted.
  for _ in range(2):
    reporter.step_done()
  reporter.log(5, {"loss": 1.0})
  record = writer.records[-1][1]
  np.testing.assert_allclose(record["tokens_per_sec"], record["seq_per_sec"] * 128, rtol=1e-12)
