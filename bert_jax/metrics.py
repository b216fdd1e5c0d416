"""Pretraining metrics: accumulation, the eval summary, writers (metrics.jsonl,
TensorBoard, PNG curves), the progress line and the unigram baseline. FLOPs and
peak accounting: `flops.py`; fine-tuning metrics: `finetune_metrics.py`."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from bert_jax import fileio

# ---------------------------------------------------------------------------
# Accumulation


class MeanAccumulator:
  """Averages per-step scalar metrics over a logging window.

  Keeps device arrays and fetches them once per window, so the host never waits on
  the device between logged steps.
  """

  def __init__(self):
    self._steps: list[Mapping[str, Any]] = []

  def add(self, metrics: Mapping[str, Any]) -> None:
    self._steps.append(metrics)

  def __len__(self) -> int:
    return len(self._steps)

  def result(self) -> dict[str, float]:
    """Means over the window, as Python floats; resets the window."""
    import jax

    steps = jax.device_get(self._steps)
    self._steps = []
    if not steps:
      return {}
    return {k: float(np.mean([s[k] for s in steps])) for k in steps[0]}

  def get_state(self) -> list[dict[str, list]]:
    """The window so far as JSON-able [{name: [value, dtype]}] (for checkpoints).
    The dtype comes back with the value, so a restored window averages bit for bit
    as the original would have."""
    import jax

    return [{k: [float(v), np.asarray(v).dtype.name] for k, v in s.items()}
            for s in jax.device_get(self._steps)]

  def set_state(self, state: Sequence[Mapping[str, Sequence]]) -> None:
    self._steps = [{k: np.asarray(v, dtype=dt) for k, (v, dt) in s.items()} for s in state]


def summarise_eval(sums: Mapping[str, float]) -> dict[str, float]:
  """Exact eval metrics from summed counts (see `train.eval_step`)."""
  mlm_loss = sums["mlm_loss_sum"] / max(sums["mlm_weight"], 1e-9)
  return {
      "eval_mlm_loss": mlm_loss,
      "eval_mlm_accuracy": sums["mlm_correct"] / max(sums["mlm_weight"], 1e-9),
      "eval_nsp_loss": sums["nsp_loss_sum"] / max(sums["num_sequences"], 1e-9),
      "eval_nsp_accuracy": sums["nsp_correct"] / max(sums["num_sequences"], 1e-9),
      "eval_perplexity": math.exp(min(mlm_loss, 700.0)),
  }


# ---------------------------------------------------------------------------
# Writers

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


class MetricsWriter:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl and mirrors
  the scalars to TensorBoard event files (tensorboardX, imported on first use).

  Only process 0 writes: on several hosts the metrics are global already.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.workdir = workdir
    self.enabled = enabled
    self._tensorboard = tensorboard
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)

  @property
  def path(self) -> str:
    return os.path.join(self.workdir, METRICS_FILE)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step)}
    record.update({k: float(v) for k, v in metrics.items()})
    # json writes Python floats with repr(): full double precision.
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tensorboard:
      if self._tb is None:
        from tensorboardX import SummaryWriter  # lazy: only runs that log need it
        self._tb = SummaryWriter(logdir=self.workdir)
      for k, v in metrics.items():
        self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()
      self._tb = None


def rewind_metrics(workdir: str, step: int, filename: str = METRICS_FILE) -> int:
  """Drops metrics records of steps after `step` (written by a run that died before
  its next checkpoint committed) and a torn last line; returns how many were dropped.
  The resumed run writes those steps again, so the file reads as one run."""
  import jax
  path = os.path.join(workdir, filename)
  if jax.process_index() != 0 or not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
        keep = line.endswith("\n") and int(record["step"]) <= step
      except (ValueError, KeyError, TypeError):
        keep = False
      if keep:
        kept.append(line)
      else:
        dropped += 1
  if dropped:
    fileio.write_text_atomic(path, "".join(kept))
  return dropped


def read_metrics(workdir: str) -> list[dict[str, float]]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no {METRICS_FILE} in {workdir!r}: has a run logged there?")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


_PANELS = (
    ("loss", ("loss", "mlm_loss", "nsp_loss", "eval_mlm_loss", "eval_nsp_loss")),
    ("accuracy", ("mlm_accuracy", "nsp_accuracy", "eval_mlm_accuracy", "eval_nsp_accuracy")),
    ("learning rate", ("learning_rate",)),
    ("grad norm", ("grad_norm",)),
)


def plot_curves(workdir: str, out_path: str | None = None) -> str:
  """Draws the training curves of WORKDIR/metrics.jsonl into a PNG; returns its path."""
  import matplotlib  # lazy: plotting is optional at run time
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  records = read_metrics(workdir)
  out_path = out_path or os.path.join(workdir, CURVES_FILE)
  fig, axes = plt.subplots(1, len(_PANELS), figsize=(5 * len(_PANELS), 4))
  for ax, (title, names) in zip(axes, _PANELS):
    for name in names:
      pts = [(r["step"], r[name]) for r in records if name in r]
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if name.startswith("eval_") else None,
                markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel("step")
    if ax.lines:
      ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return out_path


def format_duration(seconds: float) -> str:
  seconds = max(int(seconds), 0)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(step: int, total: int, metrics: Mapping[str, float], *,
                  seq_per_sec: float, tokens_per_sec: float, mfu_value: float | None,
                  eta_s: float) -> str:
  mfu_txt = "n/a" if mfu_value is None else f"{100 * mfu_value:.1f}%"
  return (f"step {step}/{total} | loss {metrics['loss']:.4f} | "
          f"mlm_acc {metrics['mlm_accuracy']:.4f} | nsp_acc {metrics['nsp_accuracy']:.4f} | "
          f"{seq_per_sec:.1f} seq/s | {tokens_per_sec:.0f} tok/s | MFU {mfu_txt} | "
          f"ETA {format_duration(eta_s)}")



class UnigramBaseline:
  """The best context-free MLM predictor, for comparison with the model.

  Counts the target ids (`masked_lm_ids` where `masked_lm_weights` > 0) of the
  training batches, then scores, on the held-out targets, always predicting the most
  frequent training target (accuracy) and the add-one-smoothed unigram
  distribution (cross-entropy).
  """

  def __init__(self, vocab_size: int):
    self.train_counts = np.zeros(vocab_size, np.int64)
    self.eval_counts = np.zeros(vocab_size, np.int64)

  @staticmethod
  def _targets(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    ids = np.asarray(batch["masked_lm_ids"])
    return ids[np.asarray(batch["masked_lm_weights"]) > 0]

  def add_train(self, batch: Mapping[str, np.ndarray]) -> None:
    self.train_counts += np.bincount(self._targets(batch), minlength=len(self.train_counts))

  def add_eval(self, batch: Mapping[str, np.ndarray]) -> None:
    self.eval_counts += np.bincount(self._targets(batch), minlength=len(self.eval_counts))

  def result(self) -> dict[str, float]:
    n = self.eval_counts.sum()
    if not n or not self.train_counts.sum():
      return {}
    probs = (self.train_counts + 1) / (self.train_counts.sum() + len(self.train_counts))
    return {
        "unigram_mlm_accuracy": float(self.eval_counts[np.argmax(self.train_counts)] / n),
        "unigram_mlm_loss": float(-(self.eval_counts * np.log(probs)).sum() / n),
    }
