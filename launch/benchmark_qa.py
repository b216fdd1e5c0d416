r"""Question-answering speed on this machine: bert-jax vs transformers' PyTorch
`BertForQuestionAnswering`, same size, sequence length and batch, one run.

  python -m launch.benchmark_qa --config=bert_jax/configs/tiny.py --max_seq_length=384 \
      --batch_size=32 --steps=5

The model is the config's (`--config.model.vocab_size=30522`, ... as in launch.pretrain).

Training: full steps (forward with dropout, the start/end cross-entropy,
backward, clipping at 1.0, AdamW) on the same random windows; prediction:
forward passes in eval mode (no dropout, no gradients). Compilation / the first
steps are excluded; rounds alternate (ours, theirs, ours, ...) so that a busy
machine slows both alike. Prints one JSON line per round and a summary line
with the best round of each (examples = windows of max_seq_length tokens).
"""
import json
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (the model size).",
                                          lock_config=True)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Windows per step.")
_SEQ = flags.DEFINE_integer("max_seq_length", 384, "Window length in tokens.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds per implementation.")
flags.mark_flags_as_required(["config"])


def _batches(batch_size, seq_len, vocab_size, n=2):
  import numpy as np
  rng = np.random.default_rng(0)
  out = []
  for _ in range(n):
    ids = rng.integers(5, vocab_size, (batch_size, seq_len)).astype(np.int32)
    types = np.zeros_like(ids)
    types[:, 66:] = 1  # a 64-token question, then the context
    out.append(dict(input_ids=ids, token_type_ids=types, attention_mask=np.ones_like(ids),
                    start_positions=rng.integers(0, seq_len, batch_size).astype(np.int32),
                    end_positions=rng.integers(0, seq_len, batch_size).astype(np.int32)))
  return out


def _time(fn, steps, warmup=2):
  for i in range(warmup):
    fn(i)
  t0 = time.perf_counter()
  for i in range(steps):
    fn(warmup + i)
  return (time.perf_counter() - t0) / steps


def ours(config, batches, steps):
  import functools
  import jax
  import optax
  from bert_jax import model as model_lib
  from bert_jax import optim
  from bert_jax.finetune.tasks import question_answering as qa

  model = model_lib.BertForQuestionAnswering(config)
  params = jax.jit(lambda r: model_lib.nn.unbox(model.init(
      r, **model_lib.dummy_inputs(config, 1, 8, None))["params"]))(jax.random.PRNGKey(0))
  tx = optim.make_optimizer(optim.make_schedule(learning_rate=3e-5, warmup_steps=10,
                                                total_steps=1000), weight_decay=0.01)
  opt_state = tx.init(params)
  dev = [jax.device_put(b) for b in batches]

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(params, opt_state, batch, rng):
    def loss_fn(p):
      start, end = model.apply({"params": p}, batch["input_ids"], batch["token_type_ids"],
                               batch["attention_mask"], deterministic=False,
                               rngs={"dropout": rng})
      return qa.qa_loss(start, end, batch)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def predict(params, batch):
    return model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                       batch["attention_mask"], deterministic=True)

  state = [params, opt_state]

  def train(i):
    state[0], state[1], loss = train_step(state[0], state[1], dev[i % 2],
                                          jax.random.PRNGKey(i))
    jax.block_until_ready(loss)

  def infer(i):
    jax.block_until_ready(predict(state[0], dev[i % 2]))

  return _time(train, steps), _time(infer, steps)


def theirs(config, batches, steps):
  import torch
  import transformers
  from bert_jax import interop

  torch.manual_seed(0)
  model = transformers.BertForQuestionAnswering(
      transformers.BertConfig(**interop.config_to_hf(config)))
  decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
  no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                           {"params": no_decay, "weight_decay": 0.0}], lr=3e-5, eps=1e-6)
  tb = [{k: torch.tensor(v, dtype=torch.long) for k, v in b.items()} for b in batches]

  def train(i):
    model.train()
    out = model(**tb[i % 2])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()

  def infer(i):
    model.eval()
    b = {k: v for k, v in tb[i % 2].items() if not k.endswith("_positions")}
    with torch.no_grad():
      model(**b)

  return _time(train, steps), _time(infer, steps), transformers.__version__, torch.__version__


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax
  import torch
  from bert_jax import model as model_lib

  m = _CONFIG.value.model
  config = model_lib.BertConfig(**{**m.to_dict(), "max_position_embeddings": max(
      m.max_position_embeddings, _SEQ.value)})
  batches = _batches(_BATCH.value, _SEQ.value, config.vocab_size)
  bs = _BATCH.value
  best = {"ours_train": 0.0, "ours_predict": 0.0, "hf_train": 0.0, "hf_predict": 0.0}
  for r in range(_ROUNDS.value):
    t, p = ours(config, batches, _STEPS.value)
    row = {"round": r, "impl": "bert-jax", "train_examples_per_sec": bs / t,
           "predict_examples_per_sec": bs / p, "backend": jax.default_backend()}
    best["ours_train"] = max(best["ours_train"], bs / t)
    best["ours_predict"] = max(best["ours_predict"], bs / p)
    print(json.dumps(row), flush=True)
    t, p, tv, pv = theirs(config, batches, _STEPS.value)
    row = {"round": r, "impl": f"transformers {tv} (torch {pv}, {torch.get_num_threads()} threads)",
           "train_examples_per_sec": bs / t, "predict_examples_per_sec": bs / p}
    best["hf_train"] = max(best["hf_train"], bs / t)
    best["hf_predict"] = max(best["hf_predict"], bs / p)
    print(json.dumps(row), flush=True)
  print(json.dumps({"summary": True, "preset": _CONFIG.value.preset, "max_seq_length": _SEQ.value,
                    "batch_size": bs, **{k: round(v, 2) for k, v in best.items()},
                    "train_ratio": round(best["ours_train"] / best["hf_train"], 3),
                    "predict_ratio": round(best["ours_predict"] / best["hf_predict"], 3)}),
        flush=True)


if __name__ == "__main__":
  cli.run(main)
