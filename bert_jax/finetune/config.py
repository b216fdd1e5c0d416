"""What a fine-tuning run is handed: its options and the text side's protocol.

`FinetuneConfig` is declared once: every field carries its help text, and
`launch/finetune.py` makes the absl flags from the fields. Fields tagged `text=True` are
the text side's reading options: `text_options()` collects them for the text package's
`finetune.tasks.make_text_task` (a new option is one tagged field here).
`TextSide` / `EncodedData` are what `finetune.run` needs of that package, which bert_jax
never imports.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from bert_jax.finetune import distill
from bert_jax.finetune import lora
from bert_jax.finetune import peft as peft_lib
from bert_jax.finetune import tasks as tasks_lib

TASKS = tasks_lib.NAMES
# Besides the `text=True` fields and the labels, what a fine-tuned model directory
# records of its task (`FinetuneConfig.model_options`).
MODEL_OPTIONS = ("max_seq_length", "metric_for_best")
# FinetuneConfig fields that default to None take the task's `defaults`, else these.
_GENERIC_DEFAULTS = {"max_seq_length": 128, "num_epochs": 3}


def _field(default, help_text: str, **kw):
  """A FinetuneConfig field with the help text its command-line flag shows. Tags:
  `text=True` (a reading option of the text side), `positive=True` (must be > 0, checked
  after the task's defaults), `required`, `enum`."""
  return dataclasses.field(default=default, metadata={"help": help_text, **kw})


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """One fine-tuning run. Defaults are BERT's fine-tuning recipe."""
  task: str = _field(None, "What to fine-tune for.", required=True, enum=TASKS)
  init_from: str = _field(
      None, "Hugging Face BERT directory: config.json, model.safetensors or "
      "pytorch_model.bin, and vocab.txt (or a SentencePiece .model).", required=True)
  output_dir: str = _field(None, "Where the best model, metrics and predictions go.",
                           required=True)
  train_file: str | None = _field(None, "CSV/TSV/JSONL, or CoNLL/JSONL for NER. None: "
                                  "evaluate / predict with init_from's head.")
  eval_file: str | None = _field(None, "Labelled evaluation file (same format); the best epoch "
                                 "is chosen on it. None: train only, the last epoch is kept.")
  predict_file: str | None = _field(None, "Unlabelled input to label.")
  text_column: str = _field("sentence", "Column of the (first) text.", text=True)
  text_pair_column: str | None = _field(None, "Column of the second text, for pairs.",
                                        text=True)
  label_column: str = _field("label", "Column of the label.", text=True)
  tokens_key: str = _field("tokens", "NER JSONL: key of the tokens.", text=True)
  tags_key: str = _field("tags", "NER JSONL: key of the tags.", text=True)
  labels: tuple[str, ...] | None = _field(
      None, "The label set, in id order (default: the sorted labels of the train file).")
  max_seq_length: int | None = _field(None, "Tokens per sequence (default: the task's; 128, "
                                      "QA 384).", positive=True)
  batch_size: int = _field(32, "Global training batch size.", positive=True)
  eval_batch_size: int = _field(64, "Global eval batch.", positive=True)
  learning_rate: float = _field(3e-5, "Peak learning rate (BERT: 2e-5 to 5e-5; LoRA usually "
                                "wants ~1e-4 to 1e-3).")
  num_epochs: int | None = _field(None, "Training epochs (default: the task's; 3, QA 2).",
                                  positive=True)
  warmup_fraction: float = _field(0.1, "Warmup share of the steps.")
  weight_decay: float = _field(0.01, "AdamW weight decay.")
  grad_clip_norm: float = _field(1.0, "Global gradient-norm clipping.")
  peft: str | None = _field(
      None, "Parameter-efficient fine-tuning (docs/peft.md): none = full fine-tuning; lora "
      "(--lora_rank, merged into plain BERT on export); adapters (Houlsby bottlenecks, "
      "--adapter_size); prefix (per-layer key/value prefixes, --prefix_length); bitfit (biases "
      "only). The task head trains under every method. Unset: lora when --lora_rank > 0, "
      "else none. PEFT methods usually want a higher --learning_rate (1e-4 to 1e-2).",
      enum=peft_lib.METHODS)
  lora_rank: int = _field(0, "LoRA rank. Without --peft, > 0 selects LoRA and 0 full "
                          f"fine-tuning; --peft=lora with 0 uses {peft_lib.DEFAULT_LORA_RANK}.")
  lora_alpha: float = _field(16.0, "LoRA scale numerator (scale = alpha / rank).")
  lora_targets: tuple[str, ...] = _field(lora.DEFAULT_TARGETS, "Kernels LoRA adapts.")
  adapter_size: int = _field(64, "--peft=adapters: bottleneck width of each adapter (two per "
                             "layer).")
  prefix_length: int = _field(16, "--peft=prefix: trained key/value positions per layer.")
  metric_for_best: str | None = _field(
      None, "Eval metric that picks the best epoch (default: the task's; higher is better).")
  mesh_shape: tuple[int, ...] = _field((-1, 1, 1), "data,fsdp,tensor mesh shape (default: "
                                       "all devices data-parallel).")
  dtype: str = _field("float32", "Compute dtype.", enum=("float32", "bfloat16"))
  seed: int = _field(0, "Seed of the head init, order and dropout.")
  log_every_steps: int = _field(50, "Progress interval.", positive=True)
  length_buckets: int = _field(
      0, "Batch widths: 0 = as many as pay for their compilation, by a cost model of the run "
      "(padding FLOPs saved against measured compile seconds; bert_jax/finetune/bucket_cost.py); "
      "N >= 1: at most N widths fitted to each file's lengths (bucketing.py); 1: every batch "
      "at the file's longest example's width.")
  compilation_cache_dir: str | None = _field(
      None, "JAX's persistent compilation cache (docs/compilation_cache.md): a second run of "
      "the same shapes compiles nothing. Default: $BERT_JAX_COMPILATION_CACHE, else "
      "~/.cache/bert_jax/xla ($XDG_CACHE_HOME respected); none: off.")
  # Task distillation (bert_jax/finetune/distill.py).
  teacher: str | None = _field(
      None, "Distil from this fine-tuned model of the same task and labels (a best_model "
      "directory): loss = alpha x distill + (1 - alpha) x task loss.")
  distill_alpha: float = _field(0.5, "Weight of the distillation term (0: plain fine-tuning).")
  distill_temperature: float = _field(2.0, "Softmax temperature T of the distillation KL "
                                      "(scaled by T^2).")
  distill_file: str | None = _field(
      None, "Unlabelled file of the task's format: extra rows that learn the teacher's soft "
      "labels only.")
  student_layers: str | None = _field(
      None, "Build the student from init_from's own layers: 'every_other' (0,2,4,..., "
      "DistilBERT's init) or indices '0,2,4'; with init_from=the teacher's directory.")
  # Question answering (--task=qa); BERT's run_squad.py defaults.
  version_2_with_negative: bool = _field(
      False, "QA: SQuAD v2.0, questions may have no answer (is_impossible).", text=True)
  doc_stride: int = _field(128, "QA: tokens between the STARTS of consecutive context windows "
                           "(BERT's doc_stride; transformers' stride is the overlap instead).",
                           text=True, positive=True)
  max_query_length: int = _field(64, "QA: question tokens kept (the rest is cut).", text=True,
                                 positive=True)
  n_best_size: int = _field(20, "QA: start / end candidates per window, and n-best list size.",
                            text=True, positive=True)
  max_answer_length: int = _field(30, "QA: longest answer, in tokens.", text=True,
                                  positive=True)
  null_score_diff_threshold: float = _field(
      0.0, "QA v2.0: answer \"\" when null score - best span score exceeds this (tune it: "
      "eval_results.json's eval_best_f1_thresh).", text=True)
  qa_metric: str = _field("auto", "QA scoring: squad (official EM/F1), cmrc (CMRC 2018, "
                          "Chinese), auto (cmrc when the contexts are mostly CJK).",
                          enum=("auto", "squad", "cmrc"), text=True)

  def with_task_defaults(self) -> "FinetuneConfig":
    """This config with the unset (None) fields filled from the task's defaults."""
    task = tasks_lib.get(self.task)
    defaults = {**_GENERIC_DEFAULTS, **task.defaults}
    filled = {name: defaults[name] for name in _GENERIC_DEFAULTS if getattr(self, name) is None}
    return dataclasses.replace(self, **filled)

  def validate(self) -> None:
    for name in ("task", "init_from", "output_dir"):
      if not getattr(self, name):
        raise ValueError(f"{name} is required")
    task = tasks_lib.get(self.task)
    resolved = self.with_task_defaults()
    if self.train_file is None and self.eval_file is None and self.predict_file is None:
      raise ValueError("nothing to do: give a train_file (with an eval_file to choose the best "
                       "epoch), an eval_file or a predict_file")
    for name in (f.name for f in dataclasses.fields(self) if f.metadata.get("positive")):
      if int(getattr(resolved, name)) <= 0:
        raise ValueError(f"{name}={getattr(resolved, name)}: must be positive")
    if self.length_buckets < 0:
      raise ValueError(f"length_buckets={self.length_buckets}: must be >= 0 (0: chosen by cost)")
    if not 0.0 <= self.warmup_fraction < 1.0:
      raise ValueError(f"warmup_fraction={self.warmup_fraction}: must lie in [0, 1)")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate={self.learning_rate}: must be positive")
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank={self.lora_rank}: must be >= 0")
    if self.peft not in (None, "lora") and self.lora_rank > 0:
      raise ValueError(f"lora_rank={self.lora_rank} is for --peft=lora, not --peft={self.peft}")
    for name in ("adapter_size", "prefix_length"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name}={getattr(self, name)}: must be positive")
    distill.check_options(self)
    metric = self.best_metric
    if metric not in task.metric_names:
      raise ValueError(f"metric_for_best={metric!r}: for task={self.task} choose one of "
                       f"{task.metric_names}")

  @property
  def peft_method(self) -> str:
    """The PEFT method in force: --peft, else lora when lora_rank > 0, else none."""
    if self.peft is not None:
      return self.peft
    return "lora" if self.lora_rank > 0 else "none"

  @property
  def effective_lora_rank(self) -> int:
    """LoRA's rank when LoRA is in force, else 0."""
    if self.peft_method != "lora":
      return 0
    return self.lora_rank or peft_lib.DEFAULT_LORA_RANK

  @property
  def best_metric(self) -> str:
    return self.metric_for_best or tasks_lib.get(self.task).default_metric

  def model_options(self) -> dict:
    """What a fine-tuned model directory records of its task (finetune.json's "options"):
    the text side's reading options (QA windows, columns, qa_metric), the label set,
    max_seq_length and the metric; a prediction from that directory reuses them
    (`with_model_options`)."""
    options = {name: getattr(self, name) for name in MODEL_OPTIONS}
    return {**options, **self.text_options(),
            "labels": None if self.labels is None else list(self.labels)}

  def with_model_options(self, recorded: dict, given) -> tuple["FinetuneConfig", list[str]]:
    """(this config with `recorded` (a model directory's `model_options`) in the fields
    the user did not give (`given`: names set explicitly), the names taken). Only for a
    run that does not train: a new training chooses its own options."""
    if self.train_file is not None or not recorded:
      return self, []
    fields = {f.name for f in dataclasses.fields(self)}
    taken = {}
    for name, value in recorded.items():
      if name in fields and name not in given and value is not None:
        current = getattr(self, name)
        value = tuple(value) if isinstance(value, list) else value
        if value != current:
          taken[name] = value
    return dataclasses.replace(self, **taken), sorted(taken)

  def text_options(self) -> dict:
    """The text side's reading options: every field tagged `text=True`."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.metadata.get("text")}


class TextSide(Protocol):
  """The text side of a task, handed to `run` (see `launch/finetune.py`):
  tokenizer, reading, encoding, decoding rows into examples, prediction files."""

  def load_tokenizer(self, directory: str) -> Any: ...
  def export_tokenizer(self, tokenizer, directory: str, model_max_length: int) -> None: ...
  def read(self, path: str, labelled: bool) -> list: ...
  def label_list(self, train_items, given) -> list[str] | None: ...
  def encode(self, path, items, tokenizer, label_list, max_seq_length) -> "EncodedData": ...
  def references(self, encoded) -> Any: ...
  def decode(self, encoded, row_outputs, label_list) -> Any: ...
  def write_predictions(self, stem, encoded, predictions, label_list) -> str: ...
  def meta(self) -> dict: ...
  def skipped_rows(self, encoded) -> list[dict]: ...
  def unk_report(self, encoded, tokenizer) -> tuple[str, bool]: ...


class EncodedData(Protocol):
  """An encoded file: `arrays` ([N_rows, ...] model inputs, plus labels when
  labelled), `len()` = number of examples."""
  path: str
  arrays: dict[str, np.ndarray]

  @property
  def labelled(self) -> bool: ...

  def __len__(self) -> int: ...
