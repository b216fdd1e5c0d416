"""The cost model that picks the number of batch widths (bert_jax/finetune/bucket_cost.py)."""
import numpy as np

from bert_jax.finetune import bucket_cost
from bert_jax.finetune import bucketing

_MODEL = dict(max_seq_length=128, batch_size=32, eval_batch_size=64, hidden=128,
              intermediate=512, layers=2, rate=1e10)


def _run(epochs):
  return bucket_cost.RunShape(epochs=epochs, **_MODEL)


def _lengths(n, seed):
  return np.random.default_rng(seed).integers(8, 23, n)  # sentence-like: 8-22 tokens


def test_compilation_against_padding(tmp_path):
  train, dev = _lengths(8192, 0), _lengths(256, 1)
  costs = bucket_cost.Costs(None, "sig")
  # Compilation free: the most widths the data has (each saves padding).
  costs.compile_seconds = 1e-9
  k, table = bucket_cost.choose(train, dev, costs, False, _run(2))
  assert k == 3 and bucketing.bucket_widths(train, 128, k) == (8, 16, 24)
  # Every k's estimate is its padded tokens' FLOPs over the rate, plus its shapes' compiles.
  row = table[1]
  widths = bucketing.bucket_widths(train, 128, 2)
  tokens = bucket_cost.padded_tokens(train, widths, 32)
  flops = sum(t * bucket_cost.token_flops(128, 512, 2, w, True) for w, t in tokens.items())
  eval_tokens = bucket_cost.padded_tokens(dev, bucketing.bucket_widths(dev, 128, 2), 64)
  flops += sum(t * bucket_cost.token_flops(128, 512, 2, w, False) for w, t in eval_tokens.items())
  np.testing.assert_allclose(row["compute_seconds"], 2 * flops / (1e10 * bucket_cost.MODEL_EFFICIENCY))
  assert len(row["shapes"]) == 4
  # Compilation dear against a short run: one width (max_seq_length is then k = 1).
  costs.compile_seconds = 1e3
  assert bucket_cost.choose(train, dev, costs, False, _run(2))[0] == 1
  # ... unless those shapes were compiled before and the cache is on: a load is cheap.
  steps = bucket_cost.train_steps(train, _run(2), 2)
  costs.compiled = {("train", 16, steps), ("train", 24, steps), ("predict", 16, 0),
                    ("predict", 24, 0)}
  assert bucket_cost.choose(train, dev, costs, True, _run(2))[0] == 2  # 16, 24
  assert bucket_cost.choose(train, dev, costs, False, _run(2))[0] == 1
  # A train step compiled for another number of steps is another program (its schedule).
  costs.compiled = {("train", 16, steps + 1), ("train", 24, steps + 1), ("predict", 16, 0),
                    ("predict", 24, 0)}
  row = bucket_cost.choose(train, dev, costs, True, _run(2))[1][1]
  np.testing.assert_allclose(row["compile_seconds"], 2 * 1e3 + 2 * 0.5 * 1e3 * bucket_cost.WARM_SHARE)


def test_more_steps_buy_more_widths():
  train, dev = _lengths(8192, 0), _lengths(256, 1)
  costs = bucket_cost.Costs(None, "sig")
  costs.compile_seconds = 5.0
  ks = [bucket_cost.choose(train, dev, costs, False, _run(e))[0] for e in (1, 100)]
  assert ks[0] <= ks[1] and ks[1] == 3


def test_record_keeps_measurements_per_signature(tmp_path):
  costs = bucket_cost.Costs(str(tmp_path), "a")
  assert costs.compile_seconds is None and not costs.compiled
  keys = [("train", ("attention_mask", (32, 16)), ("input_ids", (32, 16))),
          ("predict", ("attention_mask", (64, 24)), ("input_ids", (64, 24))), "merge"]
  bucket_cost.record_run(costs, keys, compile_seconds=3.0, cold=True, steps=10)
  again = bucket_cost.Costs(str(tmp_path), "a")
  assert again.compile_seconds == 3.0 / 1.5
  assert again.compiled == {("train", 16, 10), ("predict", 24, 0)}
  bucket_cost.record_run(again, keys[:1], compile_seconds=0.1, cold=False, steps=10)  # warm
  assert bucket_cost.Costs(str(tmp_path), "a").compile_seconds == 2.0
  assert bucket_cost.Costs(str(tmp_path), "b").compile_seconds is None
