"""Task distillation: a student fine-tuned to imitate a fine-tuned teacher of its task.

With `--teacher=DIR` (a model `launch.finetune` exported: config.json + finetune.json,
same task, same labels, same vocabulary) the training loss becomes

  alpha x task.distill_loss(student, teacher, T) + (1 - alpha) x task.loss

(`Task.distill_loss`: KL(teacher || student) at temperature T scaled by T^2 for
classification, MSE for regression, per tagged token for NER, start + end for QA).
Rows of `--distill_file` (unlabelled, the task's format) carry no labels: their task
weight is 0 and only the alpha-weighted distillation term counts. They form batches
of their own (a batch is labelled or not as a whole, so each compiled step has one
batch structure), shuffled in among the train file's each epoch.

The teacher's outputs are computed on the fly, in the same jitted step as the
student's: one extra forward per step (no gradient, no optimizer state, no copy in
the train state). Since the data is not augmented they could be cached once instead,
but on the fly keeps a single code path for every task (QA's windows, NER's per-token
outputs), needs no store of [rows, L, K] logits, and follows the length buckets and
the shuffling as they are. The teacher's parameters are a jit argument, placed on the
mesh by the student's sharding rules, never differentiated (stop_gradient as well),
never exported: `best_model/` is the student alone.

`--student_layers` builds a shallower student from `--init_from`'s own layers
(DistilBERT's initialisation: "every_other" = 0, 2, 4, ..., or a list "0,2,4"); with
`--init_from=TEACHER_DIR` the student starts from the teacher's weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import tree as tree_lib
from bert_jax.distillation import teacher as teacher_lib
from bert_jax.finetune import tasks as tasks_lib

_LAYER = re.compile(r"^(.*encoder/)layer_(\d+)(/.*)$")
_VOCAB_FILES = ("vocab.txt", "spiece.model", "sentencepiece.model")


@dataclasses.dataclass(frozen=True)
class Objective:
  """A task's distillation loss: what the train step is handed as its `task` when a
  teacher is given (static in the jitted step; the teacher's parameters are not)."""
  task: tasks_lib.Task
  teacher_model: Any
  alpha: float
  temperature: float

  def teacher_outputs(self, teacher_params, batch) -> Any:
    out = self.teacher_model.apply({"params": teacher_params}, batch["input_ids"],
                                   batch["token_type_ids"], batch["attention_mask"],
                                   deterministic=True)
    return jax.lax.stop_gradient(out)

  def loss(self, outputs, batch, teacher_outputs):
    """(loss, count) of one batch; a batch without labels (from the distill file) has
    task weight 0: only the distillation term, still alpha-weighted."""
    soft, soft_count = self.task.distill_loss(outputs, teacher_outputs, batch,
                                              self.temperature)
    if not is_labelled(batch):
      return self.alpha * soft, soft_count
    hard, count = self.task.loss(outputs, batch)
    return self.alpha * soft + (1.0 - self.alpha) * hard, count


def is_labelled(batch: Mapping[str, Any]) -> bool:
  return any(k not in batch_lib.INPUT_KEYS for k in batch)


@dataclasses.dataclass
class TeacherModel:
  path: str
  objective: Objective
  params: Any                 # on the mesh, sharded like the student
  shardings: Any
  parameters: int


def check_options(cfg) -> None:
  """The distillation flags' own consistency (before anything is read)."""
  if cfg.teacher is None:
    for name in ("distill_file",):
      if getattr(cfg, name):
        raise ValueError(f"{name}={getattr(cfg, name)}: needs --teacher (its soft labels are "
                         "the only targets of those rows)")
    return
  if cfg.train_file is None:
    raise ValueError(f"teacher={cfg.teacher}: distillation trains; give a train_file")
  if not 0.0 <= cfg.distill_alpha <= 1.0:
    raise ValueError(f"distill_alpha={cfg.distill_alpha}: must lie in [0, 1]")
  if cfg.distill_temperature <= 0:
    raise ValueError(f"distill_temperature={cfg.distill_temperature}: must be positive")
  if cfg.distill_file and cfg.distill_alpha == 0:
    raise ValueError(f"distill_file={cfg.distill_file} with distill_alpha=0: its rows would "
                     "weigh nothing")


def parse_layers(spec: str, num_layers: int, where: str) -> tuple[int, ...]:
  """`--student_layers`: "every_other" or comma-separated indices into `where`'s layers."""
  if spec.strip() == "every_other":
    return teacher_lib.every_other_layer(num_layers)
  try:
    layers = tuple(int(s) for s in spec.split(",") if s.strip())
  except ValueError:
    raise ValueError(f"student_layers={spec!r}: expected 'every_other' or indices like "
                     "'0,2,4'") from None
  bad = [i for i in layers if not 0 <= i < num_layers]
  if not layers or bad:
    raise ValueError(f"student_layers={spec!r}: {bad or 'no layers'} outside the "
                     f"{num_layers} layers of {where} (0..{num_layers - 1})")
  return layers


def select_layers(bert_config: model_lib.BertConfig, pretrained: Mapping[str, Any], spec: str,
                  where: str) -> tuple[model_lib.BertConfig, dict]:
  """(config, params) of a student made of `where`'s layers named by `spec` (student
  layer i = layer spec[i]); embeddings, pooler and heads copied as they are."""
  layers = parse_layers(spec, bert_config.num_hidden_layers, where)
  flat = tree_lib.flatten(interop.unstack_layers(pretrained))
  out = {}
  for path, value in flat.items():
    m = _LAYER.match("/".join(path))
    if m is None:
      out[path] = value
      continue
    i = int(m.group(2))
    if i < len(layers):
      src = f"{m.group(1)}layer_{layers[i]}{m.group(3)}"
      out[path] = flat[tuple(src.split("/"))]
  params = tree_lib.unflatten(out)
  config = dataclasses.replace(bert_config, num_hidden_layers=len(layers))
  return config, (interop.stack_layers(params) if config.scan_layers else params)


def _read_meta(path: str) -> dict:
  meta_path = os.path.join(path, "finetune.json")
  if not os.path.isdir(path):
    raise ValueError(f"teacher={path}: no such directory")
  if not os.path.exists(os.path.join(path, interop.CONFIG_NAME)) or not os.path.exists(meta_path):
    raise ValueError(f"teacher={path}: not a fine-tuned model (a launch.finetune best_model "
                     "directory has config.json and finetune.json)")
  with open(meta_path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{meta_path}: invalid JSON ({e})") from e


def _vocab_digest(directory: str) -> str | None:
  for name in _VOCAB_FILES:
    if os.path.exists(os.path.join(directory, name)):
      with open(os.path.join(directory, name), "rb") as f:
        return f"{name}:{hashlib.sha256(f.read()).hexdigest()}"
  return None


def check_teacher(cfg, label_list: Sequence[str], student_config: model_lib.BertConfig
                  ) -> tuple[model_lib.BertConfig, dict]:
  """(teacher config, teacher NumPy params with its head) after checking that the
  teacher is a fine-tuned model of this task, labels and vocabulary."""
  path, task = cfg.teacher, tasks_lib.get(cfg.task)
  meta = _read_meta(path)
  if meta.get("task") != cfg.task:
    raise ValueError(f"teacher={path} is a task={meta.get('task')} model; this run is "
                     f"task={cfg.task}")
  if list(meta.get("labels") or []) != list(label_list):
    raise ValueError(f"teacher={path} has labels {meta.get('labels')}; this run's labels are "
                     f"{list(label_list)} (pass --labels in the teacher's order if they are the "
                     "same set)")
  config, params = interop.load_hf(path, dtype=cfg.dtype)
  if (config.vocab_size != student_config.vocab_size
      or _vocab_digest(path) != _vocab_digest(cfg.init_from)):
    raise ValueError(f"teacher={path} (vocab_size {config.vocab_size}) and init_from="
                     f"{cfg.init_from} (vocab_size {student_config.vocab_size}) have different "
                     "vocabularies: the teacher must read the student's token ids")
  head = task.head_from_hf(interop.read_state_dict(path), len(label_list), config.hidden_size)
  if head is None:
    raise ValueError(f"teacher={path}: no {task.head_name} head for {len(label_list)} labels")
  return config, {"bert": params["bert"], **head}


def load_teacher(cfg, label_list: Sequence[str], student_config: model_lib.BertConfig,
                 place: Callable[[Any, model_lib.BertConfig, dict], tuple[Any, Any, frozenset]]
                 ) -> TeacherModel:
  """The teacher on the mesh. `place(model, config, source)` puts NumPy params in
  place by the student's sharding rules: (params, shardings, the paths it loaded)."""
  config, source = check_teacher(cfg, label_list, student_config)
  task = tasks_lib.get(cfg.task)
  model = task.model(config, len(label_list))
  params, shardings, loaded = place(model, config, source)
  fresh = sorted("/".join(p) for p in tree_lib.flatten(params) if p not in loaded)
  if fresh:
    raise ValueError(f"teacher={cfg.teacher}: lacks {fresh[:4]} of a {cfg.task} model")
  return TeacherModel(path=os.path.abspath(cfg.teacher),
                      objective=Objective(task, model, cfg.distill_alpha,
                                          cfg.distill_temperature),
                      params=params, shardings=shardings,
                      parameters=tree_lib.count_params(params))


def unlabelled_arrays(encoded) -> dict[str, np.ndarray]:
  """The model inputs of an encoded `--distill_file` (labels, if any, dropped)."""
  return {k: encoded.arrays[k] for k in batch_lib.INPUT_KEYS}


def mixed_batches(train_batches: Callable[..., Any], train_arrays, distill_arrays,
                  batch_size: int, seed: int, epoch: int, length_buckets: int):
  """One epoch: the train file's batches and the distill file's, in a (seed, epoch)
  order; each source keeps its own length-bucketed order."""
  labelled = list(train_batches(train_arrays, batch_size, seed, epoch, length_buckets))
  if distill_arrays is None:
    yield from labelled
    return
  unlabelled = list(train_batches(distill_arrays, batch_size, seed + 1, epoch, length_buckets))
  sources = np.array([0] * len(labelled) + [1] * len(unlabelled))
  np.random.default_rng([seed, epoch, 7]).shuffle(sources)
  its = (iter(labelled), iter(unlabelled))
  for s in sources:
    yield next(its[s])


def results(teacher: TeacherModel | None, cfg) -> dict:
  """What eval_results.json records of the distillation (not the teacher's weights)."""
  if teacher is None:
    return {}
  return dict(teacher=teacher.path, distill_alpha=cfg.distill_alpha,
              distill_temperature=cfg.distill_temperature,
              teacher_parameters=teacher.parameters)
