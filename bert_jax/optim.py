"""Optimiser, learning-rate schedule, weight-decay mask and gradient accumulation.

BERT's recipe: AdamW (b1 0.9, b2 0.999, eps 1e-6, weight decay 0.01 on everything
but LayerNorm parameters and biases), global-norm clipping at 1.0, linear warmup to
the peak rate then linear decay to zero. LAMB (You et al. 2019) is the large-batch
option; cosine decay is the schedule option. ModernBERT's recipe adds a
warmup-stable-decay schedule ("wsd": warmup, a long plateau at the peak rate, a
final 1-sqrt decay; Hägele et al. 2024) and StableAdamW (AdamW whose step is
divided, per parameter tensor, by max(1, RMS(g^2 / v)): Adafactor-style update
clipping, Wortsman et al. 2023).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

# Leaf names that are never decayed. Name-based rather than rank-based (nanoGPT's
# `ndim >= 2`) because with a scan over layers a LayerNorm scale is [layers, embed]:
# rank 2, yet still a LayerNorm parameter.
_NO_DECAY_LEAVES = ("bias", "scale")
_NO_DECAY_MODULE_SUBSTRINGS = ("layernorm", "layer_norm")

SCHEDULES = ("linear", "cosine", "wsd")
OPTIMIZERS = ("adamw", "lamb", "stableadamw")


def _path_names(path) -> list[str]:
  """Dict keys along a pytree path; box attributes (`.value`) are skipped."""
  return [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]


def decay_mask(params: Any) -> Any:
  """True where weight decay applies: every parameter but LayerNorm ones and biases.

  Works on plain or `nn.LogicallyPartitioned`-boxed trees: the result has the
  structure of `params` (boxes included), as `optax.masked` requires.
  """

  def decays(path, _):
    names = _path_names(path)
    if not names:
      raise ValueError("decay_mask needs a tree of dicts keyed by parameter names")
    if names[-1] in _NO_DECAY_LEAVES:
      return False
    return not any(s in n.lower() for n in names for s in _NO_DECAY_MODULE_SUBSTRINGS)

  return jax.tree_util.tree_map_with_path(decays, params)


def make_schedule(
    *, learning_rate: float, warmup_steps: int, total_steps: int, kind: str = "linear",
    decay_fraction: float = 0.1,
) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then decay to 0 at
  `total_steps` (linearly, BERT's schedule, or along a half cosine). "wsd" holds the
  peak until the last round(decay_fraction * total_steps) steps, then decays as
  peak * (1 - sqrt(t / decay_steps)) to 0."""
  if kind not in SCHEDULES:
    raise ValueError(f"config.schedule={kind!r}: expected one of {SCHEDULES}")
  if total_steps <= 0:
    raise ValueError(f"config.num_train_steps={total_steps}: must be positive")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(
        f"config.warmup_steps={warmup_steps}: must lie in [0, num_train_steps={total_steps}]")
  if kind == "wsd":
    return _wsd_schedule(learning_rate, warmup_steps, total_steps, decay_fraction)
  decay_steps = max(total_steps - warmup_steps, 1)
  warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  if kind == "linear":
    decay = optax.linear_schedule(learning_rate, 0.0, decay_steps)
  else:
    decay = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=0.0)
  if warmup_steps == 0:
    return decay
  return optax.join_schedules([warmup, decay], boundaries=[warmup_steps])


def _wsd_schedule(peak: float, warmup_steps: int, total_steps: int,
                  decay_fraction: float) -> optax.Schedule:
  if not 0.0 < decay_fraction <= 1.0:
    raise ValueError(f"config.decay_fraction={decay_fraction}: must lie in (0, 1]")
  decay_steps = max(int(round(decay_fraction * total_steps)), 1)
  decay_start = total_steps - decay_steps
  if warmup_steps > decay_start:
    raise ValueError(
        f"config.warmup_steps={warmup_steps} runs into the decay, which starts at step "
        f"{decay_start} (num_train_steps={total_steps}, decay_fraction={decay_fraction})")

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / max(warmup_steps, 1)
    into_decay = jnp.clip((step - decay_start) / decay_steps, 0.0, 1.0)
    stable_or_decay = peak * (1.0 - jnp.sqrt(into_decay))
    return jnp.where(step < warmup_steps, warm, stable_or_decay)

  return schedule


class StableAdamWState(NamedTuple):
  count: jax.Array
  mu: Any
  nu: Any


def stable_adamw(learning_rate: optax.ScalarOrSchedule, *, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-6, weight_decay: float = 0.0, mask: Any = None
                 ) -> optax.GradientTransformation:
  """StableAdamW: AdamW with per-tensor update clipping (Wortsman et al. 2023; optimi).

  For each parameter tensor, with bias-corrected moments m, v of step t:
    rms = sqrt(mean(g^2 / max(v, eps^2)))
    lr' = lr_t / max(1, rms)
    p  <- p - lr' * (m / (sqrt(v) + eps) + weight_decay * p)   (decay where `mask`)
  so a tensor whose gradient jumps far past its running second moment takes a
  smaller step instead of a destabilising one.
  """

  def init_fn(params):
    zeros = lambda p: jnp.zeros_like(p, jnp.float32)  # noqa: E731
    return StableAdamWState(jnp.zeros([], jnp.int32), jax.tree.map(zeros, params),
                            jax.tree.map(zeros, params))

  def update_fn(grads, state, params):
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g.astype(jnp.float32), state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g.astype(jnp.float32)),
                      state.nu, grads)
    c1 = 1 - b1 ** count.astype(jnp.float32)
    c2 = 1 - b2 ** count.astype(jnp.float32)
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    decays = (jax.tree.map(lambda _: True, params) if mask is None
              else (mask(params) if callable(mask) else mask))

    def one(g, m, v, p, decay):
      m_hat, v_hat = m / c1, v / c2
      g = g.astype(jnp.float32)
      rms = jnp.sqrt(jnp.mean(jnp.square(g) / jnp.maximum(v_hat, eps ** 2)))
      step = m_hat / (jnp.sqrt(v_hat) + eps)
      if decay:
        step = step + weight_decay * p.astype(jnp.float32)
      return (-lr / jnp.maximum(1.0, rms) * step).astype(p.dtype)

    updates = jax.tree.map(one, grads, mu, nu, params, decays)
    return updates, StableAdamWState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(
    schedule: optax.Schedule,
    *,
    kind: str = "adamw",
    weight_decay: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    grad_clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
  """Clip by global norm, then AdamW or LAMB with the decay mask. State is float32
  whatever the compute dtype, since parameters are float32 (mixed precision)."""
  if kind not in OPTIMIZERS:
    raise ValueError(f"config.optimizer={kind!r}: expected one of {OPTIMIZERS}")
  if kind == "adamw":
    opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                      mask=decay_mask)
  elif kind == "stableadamw":
    opt = stable_adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                       mask=decay_mask)
  else:
    opt = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     mask=decay_mask)
  if grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(grad_clip_norm), opt)
  return opt


def optimizer_from_config(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule) from the training ConfigDict fields."""
  schedule = make_schedule(
      learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
      total_steps=config.num_train_steps, kind=config.schedule,
      decay_fraction=config.get("decay_fraction", 0.1))
  tx = make_optimizer(
      schedule, kind=config.optimizer, weight_decay=config.weight_decay,
      b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
      grad_clip_norm=config.grad_clip_norm)
  return tx, schedule


def split_micro_batches(batch: Mapping[str, jax.Array], num_micro_batches: int,
                        sharding_fn: Callable[[jax.Array], jax.Array] | None = None):
  """[B, ...] -> [M, B/M, ...]. Micro-batch m takes rows m, m+M, m+2M, ...

  Strided rather than contiguous: the batch dimension is sharded in contiguous
  blocks over the data-parallel devices, so with B/M divisible by the device count a
  strided micro-batch lives evenly on every device and no data moves. `sharding_fn`
  pins that layout on the new [M, B/M, ...] arrays.
  """

  def split(x):
    b = x.shape[0]
    if b % num_micro_batches:
      raise ValueError(f"batch of {b} rows does not split into "
                       f"config.num_micro_batches={num_micro_batches} micro-batches")
    x = x.reshape((b // num_micro_batches, num_micro_batches) + x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    return sharding_fn(x) if sharding_fn is not None else x

  return {k: split(v) for k, v in batch.items()}


def accumulate_gradients(
    loss_fn: Callable[..., tuple[jax.Array, Any]],
    params: Any,
    micro_batches: Mapping[str, jax.Array],
    rngs: jax.Array,
) -> tuple[Any, Any]:
  """Sum of `grad(loss_fn)` and of its auxiliary outputs over micro-batches.

  `loss_fn(params, micro_batch, rng) -> (loss, aux)` must already be normalised by
  the *global* batch's denominators (number of real predictions, of sequences), so
  that the sum over micro-batches is exactly the gradient of the one large batch.
  `micro_batches` leaves are [M, ...]; `rngs` is [M] keys. Accumulates in float32
  through `lax.scan`, so memory is that of one micro-batch.
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def body(acc, xs):
    mb, rng = xs
    grads, aux = grad_fn(params, mb, rng)
    return jax.tree.map(jnp.add, acc, (grads, aux)), None

  num = rngs.shape[0]
  first = jax.tree.map(lambda x: x[0], micro_batches)
  # Zeros of the right structure: trace one step abstractly (no FLOPs).
  shapes = jax.eval_shape(grad_fn, params, first, rngs[0])
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
  if num == 1:
    grads, aux = grad_fn(params, first, rngs[0])
    return jax.tree.map(lambda z, g: z + g, zeros, (grads, aux))
  (grads, aux), _ = jax.lax.scan(body, zeros, (micro_batches, rngs))
  return grads, aux
