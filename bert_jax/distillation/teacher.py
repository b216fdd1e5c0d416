"""The teacher of a distillation run: read once, frozen, identified by a fingerprint.

A teacher is one of our pretraining workdirs (or its checkpoints/ or a step
directory) or a Hugging Face BERT directory. Its parameters are host NumPy arrays
here; the run places them on the mesh with the same sharding rules as the student
(`partitioning`), optionally cast to bf16, and passes them to the jitted step as
an argument that is never differentiated nor handed to the optimizer: they are
not part of the train state and never written into the student's checkpoints.
Only `path` and `fingerprint` are recorded there, so that a resume with another
teacher is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import tree as tree_lib
from bert_jax.checkpointing import init_from


@dataclasses.dataclass(frozen=True)
class Teacher:
  path: str
  config: model_lib.BertConfig
  params: Mapping[str, Any]      # host NumPy arrays, our layout
  fingerprint: str               # sha256 of the parameter names, shapes and bytes


def fingerprint(params: Mapping[str, Any]) -> str:
  """A hash of a parameter tree: the same weights give the same hex digest."""
  h = hashlib.sha256()
  for name, value in sorted(tree_lib.flatten_with_names(params).items()):
    array = np.ascontiguousarray(np.asarray(value))
    h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
    h.update(array.tobytes())
  return h.hexdigest()


def load_teacher(path: str, **runtime_fields) -> Teacher:
  """Reads a teacher; `runtime_fields` set BertConfig's run-time fields (dtype, ...).

  A path that is neither kind of model directory is a ValueError naming it.
  """
  if not os.path.isdir(path):
    raise ValueError(f"teacher {path}: no such directory")
  if init_from.is_hf_directory(path):
    config, params = interop.load_hf(path, **runtime_fields)
  elif init_from.resolve_our_checkpoint(path) is not None:
    _, meta, params = init_from.read_checkpoint(path)
    fields = dict(meta["config"]["model"])
    fields.update(runtime_fields)
    config = model_lib.BertConfig(**fields)
  else:
    raise ValueError(f"teacher {path}: not a model directory (neither a Hugging Face BERT "
                     "directory with config.json nor one of our workdirs with "
                     "checkpoints/<step>/state)")
  return Teacher(path=os.path.abspath(path), config=config, params=params,
                 fingerprint=fingerprint(params))


def every_other_layer(num_teacher_layers: int) -> tuple[int, ...]:
  """DistilBERT's choice: teacher layers 0, 2, 4, ... (half the depth)."""
  return tuple(range(0, num_teacher_layers, 2))


_LAYER = re.compile(r"^(.*encoder/)layer_(\d+)(/.*)$")


def init_student_from_teacher(student_params: Mapping[str, Any], teacher: Teacher,
                              layers: Sequence[int]) -> dict[str, Any]:
  """Student parameters with the teacher's embeddings, heads and pooler, and the
  student's layer i copied from teacher layer `layers[i]` (DistilBERT's init).

  Needs equal widths and unscanned layer trees (`interop.unstack_layers` first).
  Every student parameter is either copied or an error is raised: nothing is
  silently left at its random value.
  """
  student = {"/".join(k): v for k, v in tree_lib.flatten(student_params).items()}
  source = {"/".join(k): v for k, v in tree_lib.flatten(teacher.params).items()}
  num_student = 1 + max((int(m.group(2)) for m in map(_LAYER.match, student) if m), default=-1)
  if len(layers) != num_student:
    raise ValueError(f"distill layers {tuple(layers)}: the student has {num_student} layers, "
                     f"so name {num_student} teacher layers")
  bad = [i for i in layers if not 0 <= i < teacher.config.num_hidden_layers]
  if bad:
    raise ValueError(f"distill layers {tuple(layers)}: {bad} outside the teacher's "
                     f"{teacher.config.num_hidden_layers} layers (0.."
                     f"{teacher.config.num_hidden_layers - 1})")
  copied, problems = {}, []
  for name, value in student.items():
    m = _LAYER.match(name)
    src = f"{m.group(1)}layer_{layers[int(m.group(2))]}{m.group(3)}" if m else name
    if src not in source:
      problems.append(f"{name}: no {src} in the teacher")
    elif np.shape(source[src]) != np.shape(value):
      problems.append(f"{name}: student {np.shape(value)}, teacher {src} "
                      f"{np.shape(source[src])}")
    else:
      copied[tuple(name.split("/"))] = np.asarray(source[src], dtype=np.asarray(value).dtype)
  if problems:
    raise ValueError("cannot initialise the student from the teacher's layers (widths and "
                     "vocabularies must match):\n  " + "\n  ".join(problems))
  return tree_lib.unflatten(copied)
