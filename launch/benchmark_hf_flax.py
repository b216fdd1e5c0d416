r"""Side-by-side CPU benchmark: bert-jax vs Hugging Face transformers 4.x
`FlaxBertForPreTraining`, same model size, batch, sequence length and AdamW.

transformers 4.x is *not* a dependency of this project (5.x dropped the Flax
classes): run this in a throw-away environment that has it, e.g.

  python -m venv /tmp/hfbench && /tmp/hfbench/bin/pip install "transformers<5" \
      jax==<this project's jax> flax optax ml-collections absl-py orbax-checkpoint \
      tensorboardX matplotlib safetensors
  PYTHONPATH=. /tmp/hfbench/bin/python -m launch.benchmark_hf_flax \
      --config=bert_jax/configs/tiny.py --batch_size=32 --max_seq_length=128 --steps=10

Both sides time full training steps (forward, backward, clipping, AdamW update)
on the same synthetic contract batches already on the device, compilation
excluded, with dropout on; rounds alternate (ours, theirs, ours, ...) so a busy
machine slows both alike. Prints one JSON line per round and a summary line.
"""
import functools
import json
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_SEQ = flags.DEFINE_integer("max_seq_length", 128, "Sequence length.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds per implementation.")
flags.mark_flags_as_required(["config"])


def hf_benchmark(config, batches, steps):
  """seq/s of transformers' FlaxBertForPreTraining with an equivalent train step."""
  import jax
  import jax.numpy as jnp
  import optax
  import transformers

  from bert_jax import optim

  m = config.model
  hf_config = transformers.BertConfig(
      vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_hidden_layers,
      num_attention_heads=m.num_attention_heads, intermediate_size=m.intermediate_size,
      hidden_act=m.hidden_act, hidden_dropout_prob=m.hidden_dropout_prob,
      attention_probs_dropout_prob=m.attention_probs_dropout_prob,
      max_position_embeddings=m.max_position_embeddings, type_vocab_size=m.type_vocab_size,
      layer_norm_eps=m.layer_norm_eps)
  model = transformers.FlaxBertForPreTraining(hf_config, seed=0, dtype=jnp.float32)
  schedule = optim.make_schedule(learning_rate=config.learning_rate,
                                 warmup_steps=config.warmup_steps,
                                 total_steps=config.num_train_steps)
  # The same transformation as ours: clipping + AdamW with the same decay mask.
  tx = optim.make_optimizer(schedule, weight_decay=config.weight_decay,
                            grad_clip_norm=config.grad_clip_norm)
  params = model.params
  opt_state = tx.init(params)

  def loss_fn(params, batch, rng):
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"], params=params, dropout_rng=rng,
                train=True)
    # transformers computes the MLM logits at every position; read them at the
    # masked ones, weighted as in our loss.
    logits = jnp.take_along_axis(out.prediction_logits,
                                 batch["masked_lm_positions"][..., None], axis=1)
    w = batch["masked_lm_weights"]
    mlm = optax.softmax_cross_entropy_with_integer_labels(logits, batch["masked_lm_ids"])
    nsp = optax.softmax_cross_entropy_with_integer_labels(
        out.seq_relationship_logits, batch["next_sentence_labels"])
    return jnp.sum(mlm * w) / jnp.maximum(jnp.sum(w), 1.0) + jnp.mean(nsp)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, batch, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = jax.random.PRNGKey(0)
  for i in range(2):  # compile + one warm step
    params, opt_state, loss = step(params, opt_state, batches[i % 2], jax.random.fold_in(rng, i))
  jax.block_until_ready(loss)
  t0 = time.perf_counter()
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, batches[i % 2],
                                   jax.random.fold_in(rng, i + 2))
  jax.block_until_ready(loss)
  step_time = (time.perf_counter() - t0) / steps
  return {"impl": "transformers-flax", "version": transformers.__version__,
          "seq_per_sec": config.global_batch_size / step_time, "step_time_s": step_time,
          "final_loss": float(loss)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax
  import jax.numpy as jnp
  import numpy as np

  from bert_jax import benchmark
  from bert_jax import synthetic

  config = _CONFIG.value
  config.global_batch_size = _BATCH.value
  config.max_seq_length = _SEQ.value
  config.max_predictions_per_seq = -(-15 * _SEQ.value // 100)
  config.model.max_position_embeddings = max(config.model.max_position_embeddings, _SEQ.value)
  config.model.dtype = "float32"
  config.mesh_shape = (1, 1, 1)
  if len(jax.devices()) != 1:
    raise ValueError("run on one device (no --xla_force_host_platform_device_count)")

  rng = np.random.default_rng(config.seed)
  batches = [jax.tree.map(jnp.asarray, synthetic.synthetic_batch(
      rng, config.global_batch_size, config.max_seq_length, config.max_predictions_per_seq,
      config.model.vocab_size)) for _ in range(2)]
  ours, theirs = [], []
  for _ in range(_ROUNDS.value):
    r = benchmark.run(config, steps=_STEPS.value)
    r["impl"] = "bert-jax"
    ours.append(r)
    print(json.dumps(r), flush=True)
    h = hf_benchmark(config, batches, _STEPS.value)
    theirs.append(h)
    print(json.dumps(h), flush=True)
  best_ours = max(r["seq_per_sec"] for r in ours)
  best_theirs = max(r["seq_per_sec"] for r in theirs)
  print(json.dumps({
      "summary": True, "batch_size": config.global_batch_size, "seq_len": config.max_seq_length,
      "preset": config.preset, "bert_jax_seq_per_sec": best_ours,
      "hf_flax_seq_per_sec": best_theirs, "ratio": best_ours / best_theirs,
      "bert_jax_mfu": max(r["mfu"] for r in ours)}), flush=True)


if __name__ == "__main__":
  cli.run(main)
