"""General distillation inside the pretraining loop (`bert_jax.train`), kept here so that
train.py only hands over what it has: `prepare` reads and places the teacher once,
`micro_loss` is the loss of one student micro-batch, `step_metrics` the logged terms,
`init_student` the DistilBERT-style layer copy of a fresh start and `check_resume`
the refusal of another teacher. This module never imports `bert_jax.train`: the loop's
hard-loss function is passed in.

The teacher's parameters live on the mesh with the student's sharding rules (their
logical axes come from an abstract init of the teacher model), optionally in bf16, and
are an *argument* of the jitted step: not in the train state, so never differentiated,
never given to the optimizer and never checkpointed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import partitioning
from bert_jax import tree as tree_lib
from bert_jax.checkpointing import layout
from bert_jax.distillation import internals
from bert_jax.distillation import pretraining
from bert_jax.distillation import teacher as teacher_lib

_DTYPES = ("float32", "bfloat16")
# Teacher heads each soft term reads: weight -> (parameter groups, what they are).
_HEADS = {"mlm_soft": (("cls/predictions",), "MLM head"),
          "nsp_soft": (("cls/seq_relationship", "bert/pooler"), "NSP head and pooler")}


# eq=False: hashed and compared by identity, as the static half of `TeacherArg`.
@dataclasses.dataclass(frozen=True, eq=False)
class DistillRun:
  """A run's teacher, ready for the jitted step."""
  spec: pretraining.DistillSpec
  teacher: teacher_lib.Teacher        # host copy (fp32 as read): layer init, fingerprint
  model: model_lib.BertForPreTraining  # the teacher model (unscanned, teacher dtype)
  params: Any                          # on the mesh, in the teacher dtype
  shardings: Any
  init_layers: tuple[int, ...] | None
  relation_heads: int

  @property
  def arg(self) -> "TeacherArg":
    """The jitted step's teacher argument (`arg_shardings()` its in_shardings)."""
    return TeacherArg(params=self.params, run=self)

  def arg_shardings(self) -> "TeacherArg":
    return TeacherArg(params=self.shardings, run=self)

  @property
  def meta(self) -> dict[str, str]:
    """What the student's checkpoints record of the teacher."""
    return {"path": self.teacher.path, "fingerprint": self.teacher.fingerprint}


@flax.struct.dataclass
class TeacherArg:
  """The train step's teacher argument: the parameters are traced, the run is static."""
  params: Any
  run: DistillRun = flax.struct.field(pytree_node=False)


def enabled(config) -> bool:
  return bool(config.distill.teacher)


def parse_init_layers(value: str, num_teacher_layers: int) -> tuple[int, ...] | None:
  """config.distill.init_layers: "" (no copy), "every_other" or "0,2,4"."""
  value = value.strip()
  if not value:
    return None
  if value == "every_other":
    return teacher_lib.every_other_layer(num_teacher_layers)
  try:
    return tuple(int(v) for v in value.split(",") if v.strip())
  except ValueError:
    raise ValueError(f"config.distill.init_layers={value!r}: expected '', 'every_other' or "
                     "comma-separated teacher layer indices such as '0,2,4'") from None


def _check_config(config, student: model_lib.BertConfig, teacher: teacher_lib.Teacher,
                  spec: pretraining.DistillSpec) -> tuple[int, ...] | None:
  """Errors that name the config.distill field, before anything compiles."""
  if config.distill.teacher_dtype not in _DTYPES:
    raise ValueError(f"config.distill.teacher_dtype={config.distill.teacher_dtype!r}: "
                     f"expected one of {_DTYPES}")
  spec.validate(student, teacher.config)
  if spec.minilm > 0 and student.scan_layers:
    raise ValueError("config.distill.minilm reads the student's last-layer queries, keys and "
                     "values, which a scanned encoder does not expose: set "
                     "--config.model.scan_layers=False")
  present = set(tree_lib.flatten_with_names(teacher.params))
  for weight, (groups, what) in _HEADS.items():
    lacking = [g for g in groups if not any(n.startswith(g + "/") for n in present)]
    if getattr(spec, weight) > 0 and lacking:
      raise ValueError(f"config.distill.{weight}={getattr(spec, weight)} needs the teacher's "
                       f"{what}, which {teacher.path} lacks ({', '.join(lacking)}: an "
                       f"encoder-only checkpoint?); set --config.distill.{weight}=0")
  layers = parse_init_layers(config.distill.init_layers, teacher.config.num_hidden_layers)
  if layers is None:
    return None
  n = teacher.config.num_hidden_layers
  if len(layers) != student.num_hidden_layers or any(not 0 <= i < n for i in layers):
    raise ValueError(f"config.distill.init_layers={config.distill.init_layers!r} gives teacher "
                     f"layers {layers}: the student has {student.num_hidden_layers} layers and "
                     f"the teacher {n} (indices 0..{n - 1}), so name {student.num_hidden_layers}"
                     " indices in that range")
  if student.hidden_size != teacher.config.hidden_size:
    raise ValueError(f"config.distill.init_layers={config.distill.init_layers!r} copies teacher "
                     f"layers, which needs equal widths: student hidden_size "
                     f"{student.hidden_size}, teacher {teacher.config.hidden_size}")
  return layers


def _unscanned(params: Mapping[str, Any]) -> dict[str, Any]:
  encoder = params.get("bert", {}).get("encoder", {})
  return interop.unstack_layers(params) if "layers" in encoder else dict(params)


def prepare(config, mesh: jax.sharding.Mesh, student: model_lib.BertConfig,
            rules) -> DistillRun | None:
  """The run's teacher (None when config.distill.teacher is ""): read, checked against
  the student and `config.distill`, and placed on `mesh` by `rules`."""
  if not enabled(config):
    return None
  spec = pretraining.spec_from_config(config.distill)
  loaded = teacher_lib.load_teacher(config.distill.teacher, scan_layers=False)
  teacher = dataclasses.replace(loaded, params=_unscanned(loaded.params))
  layers = _check_config(config, student, teacher, spec)
  dtype = config.distill.teacher_dtype
  model = model_lib.BertForPreTraining(teacher.config.replace(dtype=dtype, param_dtype=dtype))
  inputs = model_lib.dummy_inputs(model.config, batch_size=1, seq_len=config.max_seq_length,
                                  num_predictions=config.max_predictions_per_seq)
  with partitioning.axis_rules(mesh, rules):
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs,
                                              deterministic=True)["params"])
    shardings = partitioning.shardings_for(boxed, mesh, rules)
  abstract = tree_lib.flatten_with_names(nn.unbox(boxed))
  have = tree_lib.flatten_with_names(teacher.params)
  # Heads no weighted term reads (checked above) may be absent from an encoder-only
  # teacher: zeros stand in so the model applies; XLA drops their unused outputs.
  host = {tuple(name.split("/")): np.asarray(have.get(name, np.zeros(a.shape)), jnp.dtype(dtype))
          for name, a in abstract.items()}
  params = jax.device_put(tree_lib.unflatten(host), shardings)
  return DistillRun(spec=spec, teacher=teacher, model=model, params=params,
                    shardings=shardings, init_layers=layers,
                    relation_heads=spec.relation_heads or student.num_attention_heads)


def _inputs(batch: Mapping[str, Any]) -> tuple[tuple, dict]:
  packed = {k: batch[k] for k in batch_lib.PACKED_KEYS if k != "instance_weights" and k in batch}
  return (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
          batch["masked_lm_positions"]), packed


def _forward(module, params, batch, *, want: bool, want_qkv: bool, **kwargs):
  args, packed = _inputs(batch)
  if not want:
    return module.apply({"params": params}, *args, **packed, **kwargs), {}
  return internals.apply_with_internals(module, params, *args, config=module.config,
                                        want_qkv=want_qkv, **packed, **kwargs)


def teacher_forward(run: DistillRun, teacher_params: Any, batch: Mapping[str, Any]):
  """((mlm_logits, nsp_logits), internals) of the frozen teacher, without dropout."""
  spec = run.spec
  return _forward(run.model, teacher_params, batch, want=spec.wants_hidden,
                  want_qkv=spec.wants_qkv, deterministic=True)


def micro_loss(run: DistillRun, model, params, teacher_params, micro, rng, counts,
               hard_sums: Callable[..., dict]) -> tuple[jax.Array, dict]:
  """(loss, aux) of one micro-batch for `optim.accumulate_gradients`: the weighted
  terms, each normalised by the global `counts` ("predictions", "instances",
  "tokens"), so their sums over micro-batches are the global batch's. `hard_sums`
  is the loop's `pretraining_losses`; aux holds its sums and each soft term."""
  spec = run.spec
  student = _forward(model, params, micro, want=spec.wants_hidden, want_qkv=spec.wants_qkv,
                     deterministic=False, rngs={"dropout": rng})
  teacher = teacher_forward(run, teacher_params, micro)
  sums = hard_sums(*student[0], micro)
  hard = {"mlm_hard": sums["mlm_loss_sum"] / counts["predictions"],
          "nsp_hard": sums["nsp_loss_sum"] / counts["instances"]}
  soft = pretraining.soft_terms(student, teacher, micro, spec, counts, run.relation_heads)
  loss = pretraining.total_loss(hard, soft, spec)
  return loss, {**sums, "distill_loss": loss, **{f"distill_{k}": v for k, v in soft.items()}}


def global_counts(batch: Mapping[str, Any], num_instances: jax.Array,
                  num_predictions: jax.Array) -> dict[str, jax.Array]:
  tokens = jnp.maximum(jnp.sum(batch["attention_mask"].astype(jnp.float32)), 1.0)
  return {"predictions": num_predictions, "instances": num_instances, "tokens": tokens}


def step_metrics(run: DistillRun, sums: Mapping[str, jax.Array], mlm_loss: jax.Array,
                 nsp_loss: jax.Array) -> dict[str, jax.Array]:
  """`loss` (the weighted total) and every weighted term as `distill_<term>`."""
  terms = {"mlm_hard": mlm_loss, "nsp_hard": nsp_loss,
           **{t: sums[f"distill_{t}"] for t in pretraining.TERMS if f"distill_{t}" in sums}}
  return {"loss": sums["distill_loss"],
          **{f"distill_{t}": v for t, v in terms.items() if getattr(run.spec, t) > 0}}


def init_student(run: DistillRun, params: Any, shardings: Any) -> Any:
  """The fresh student's parameters with the teacher's embeddings, heads and the layers
  `run.init_layers` (DistilBERT's init), on `shardings`."""
  host = jax.device_get(params)
  scanned = "layers" in host["bert"]["encoder"]
  copied = teacher_lib.init_student_from_teacher(_unscanned(host), run.teacher, run.init_layers)
  if scanned:
    copied = interop.stack_layers(copied)
  return jax.device_put(copied, shardings)


def check_resume(where: str, saved: Mapping[str, Any] | None, run: DistillRun | None) -> None:
  """A checkpoint's recorded teacher (its meta's "teacher") must be this run's."""
  current = None if run is None else run.meta
  saved_fp = (saved or {}).get("fingerprint")
  if saved_fp != (current or {}).get("fingerprint"):
    raise layout.teacher_mismatch_error(where, saved, current)
