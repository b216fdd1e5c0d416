"""Logical axes, the rules that map them to the device mesh, and sharded state.

One vocabulary of logical axis names lives here. Every parameter dimension of the
model carries exactly one of the parameter names, every activation annotation one
of the `act_*` names; `DEFAULT_RULES` maps them onto the three mesh axes
`data, fsdp, tensor`. A mesh axis of size 1 costs nothing, so the same rules serve
a laptop (1 device), an 8-GPU box and a TPU pod.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Parameter axes.
VOCAB = "vocab"            # word-embedding rows / MLM output classes
EMBED = "embed"            # the model width H (residual stream)
HEADS = "heads"            # attention heads N
KV = "kv"                  # per-head width D = H / N
MLP = "mlp"                # feed-forward width (4H)
HIDDEN = "hidden"          # output side of the small H x H matrices (pooler, MLM transform)
POSITION = "position"      # position-embedding rows
TOKEN_TYPE = "token_type"  # token-type-embedding rows
CLASSES = "classes"        # NSP / task-head outputs
LAYERS = "layers"          # the stacked layer axis when layers are scanned
LORA_RANK = "lora_rank"    # low-rank adapter width

# Activation axes.
ACT_BATCH = "act_batch"
ACT_LEN = "act_len"
ACT_EMBED = "act_embed"
ACT_HEADS = "act_heads"
ACT_KV = "act_kv"
ACT_MLP = "act_mlp"
ACT_VOCAB = "act_vocab"

PARAM_AXES = (VOCAB, EMBED, HEADS, KV, MLP, HIDDEN, POSITION, TOKEN_TYPE, CLASSES,
              LAYERS, LORA_RANK)
ACTIVATION_AXES = (ACT_BATCH, ACT_LEN, ACT_EMBED, ACT_HEADS, ACT_KV, ACT_MLP, ACT_VOCAB)

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Batch over every data-parallel axis (fsdp included: an fsdp mesh still splits
# the batch); parameters' model width over fsdp (ZeRO-3 style); heads, the MLP
# and the vocabulary over tensor (Megatron style). Small axes stay replicated.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    (ACT_BATCH, ("data", "fsdp")),
    (ACT_LEN, None),
    (ACT_EMBED, None),
    (ACT_HEADS, "tensor"),
    (ACT_KV, None),
    (ACT_MLP, "tensor"),
    (ACT_VOCAB, "tensor"),
    (VOCAB, "tensor"),
    (EMBED, "fsdp"),
    (HEADS, "tensor"),
    (KV, None),
    (MLP, "tensor"),
    (HIDDEN, None),
    (POSITION, None),
    (TOKEN_TYPE, None),
    (CLASSES, None),
    (LAYERS, None),
    (LORA_RANK, None),
)


def validate_rules(rules: Rules) -> tuple[tuple[str, Any], ...]:
  """Returns `rules` as a tuple after checking names against the vocabulary."""
  known = set(PARAM_AXES) | set(ACTIVATION_AXES)
  out = []
  for i, rule in enumerate(rules):
    if len(rule) != 2:
      raise ValueError(f"logical rule #{i} {rule!r} is not a (logical_name, mesh_axes) pair")
    name, target = rule
    if name not in known:
      raise ValueError(f"logical rule #{i}: unknown logical axis {name!r}; known: {sorted(known)}")
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    for t in targets:
      if t not in MESH_AXES:
        raise ValueError(f"logical rule for {name!r}: unknown mesh axis {t!r}; mesh axes are {MESH_AXES}")
    out.append((name, target if isinstance(target, str) or target is None else tuple(target)))
  return tuple(out)


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills the single -1 entry of `mesh_shape` so the product is `num_devices`."""
  shape = [int(s) for s in mesh_shape]
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh_shape {tuple(mesh_shape)} must have {len(MESH_AXES)} entries, for {MESH_AXES}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh_shape {tuple(mesh_shape)}: at most one entry may be -1")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh_shape {tuple(mesh_shape)}: entries must be positive or -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh_shape {tuple(mesh_shape)}: {num_devices} devices do not divide by {known}")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(
        f"mesh_shape {tuple(mesh_shape)} (data, fsdp, tensor) needs {math.prod(shape)} devices, "
        f"but {num_devices} are available")
  return tuple(shape)


def make_mesh(mesh_shape: Sequence[int] = (1, -1, 1), devices: Sequence[Any] | None = None) -> Mesh:
  """A `data, fsdp, tensor` mesh over `devices` (default: all devices of all hosts).

  Axes are of GSPMD's Auto type: linen's logical partitioning places values with
  sharding constraints, which Explicit axes (jax.make_mesh's default in recent
  jax) would reject.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_shape, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if len(devices) == len(jax.devices()):
    # Lets jax lay out the mesh to follow the physical interconnect.
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
  """Activates `mesh` and the logical `rules` for tracing, init and apply."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(validate_rules(rules)):
    yield


def in_mesh(fn: Callable[..., Any], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Callable[..., Any]:
  """`fn` (a jitted step) called with `mesh` and `rules` active, so its traced
  logical constraints resolve."""
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with axis_rules(mesh, rules):
      return fn(*args, **kwargs)
  return wrapped


def logical_axes(boxed_tree: Any) -> Any:
  """The tree of logical axis tuples (None for unannotated leaves) of a boxed tree."""
  return jax.tree.map(
      lambda x: tuple(x.names) if isinstance(x, nn.LogicallyPartitioned) else None,
      boxed_tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def shardings_for(boxed_tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """NamedShardings for a (possibly abstract) tree holding LogicallyPartitioned boxes.

  Leaves without logical names (step counters, RNG keys) are replicated. A box
  whose names disagree with its rank, or whose mapped mesh axes do not divide
  its shape, is an error naming the parameter.
  """
  rules = validate_rules(rules)

  def one(path, leaf):
    if not isinstance(leaf, nn.LogicallyPartitioned):
      return NamedSharding(mesh, PartitionSpec())
    value = leaf.value
    names = tuple(leaf.names)
    shape = tuple(getattr(value, "shape", ()))
    where = _path_str(path)
    if len(names) != len(shape):
      raise ValueError(f"parameter {where}: logical axes {names} do not match its shape {shape}")
    spec = nn.logical_to_mesh_axes(names, rules)
    for dim, axes in zip(shape, spec):
      if axes is None:
        continue
      size = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
      if dim % size:
        raise ValueError(
            f"parameter {where}: dimension of size {dim} (logical axes {names}) is mapped to mesh "
            f"axes {axes} of size {size}, which does not divide it")
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(
      one, boxed_tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def create_sharded(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules = DEFAULT_RULES,
                   *args) -> tuple[Any, Any]:
  """Builds `init_fn(*args)` directly into its shardings; returns (unboxed tree, shardings).

  The tree is first traced abstractly (`jax.eval_shape`): no device memory is
  touched until the jitted init writes each shard where it belongs, so a model
  larger than one device's memory can be created.
  """
  with axis_rules(mesh, rules):
    abstract = jax.eval_shape(init_fn, *args)
    shardings = shardings_for(abstract, mesh, rules)
    tree = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return tree, shardings


def abstract_of(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying `shardings`: a restore target from any (array or
  abstract) tree, touching no device memory."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_fits_mesh(what: str, rows: int, mesh: Mesh) -> None:
  """A global batch of `rows` rows must split evenly over the data-parallel devices;
  said before anything compiles, `what` naming where the number comes from."""
  dp = data_parallel_size(mesh)
  if rows % dp:
    raise ValueError(f"{what} is not divisible by the {dp} data-parallel devices "
                     f"(data x fsdp of mesh {dict(mesh.shape)})")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows over every data-parallel mesh axis, fsdp included; the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def host_to_device(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """The one door from host NumPy to global device arrays.

  `batch` holds this process's rows only; the global batch is the
  concatenation over processes in process order, split over (data, fsdp).
  """
  sharding = batch_sharding(mesh)
  local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
  # Each local device of the data-parallel group gets rows; tensor-parallel
  # replicas of the same rows share them.
  local_shards = local_devices // mesh.shape["tensor"] if local_devices >= mesh.shape["tensor"] else 1
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    rows = value.shape[0] if value.ndim else 0
    if value.ndim == 0 or rows % max(local_shards, 1):
      raise ValueError(
          f"batch field {key!r}: {rows} local rows do not divide over the {local_shards} "
          f"data-parallel devices of this process (mesh {dict(mesh.shape)}); choose a batch size "
          f"that is a multiple of data*fsdp = {data_parallel_size(mesh)}")
    global_shape = (rows * jax.process_count(),) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out
