"""The encoder's own behaviour: config validation, masking, heads, dtypes, scan/remat, attention paths."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import interop
from bert_jax import model as model_lib


def _batch(config, batch=2, length=12, predictions=4, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, config.vocab_size, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 8:] = 0
  ids[1, 8:] = 0
  types = np.zeros_like(ids)
  types[:, 5:] = 1
  types[1, 8:] = 0
  positions = np.array([[1, 3, 6, 9], [2, 4, 6, 7]], np.int32)[:batch, :predictions]
  return dict(input_ids=ids, token_type_ids=types, attention_mask=mask, masked_lm_positions=positions)


def _init(config, batch):
  variables = model_lib.BertForPreTraining(config).init(jax.random.key(0), **batch)
  return nn.unbox(variables["params"])


@pytest.mark.parametrize("preset,layers,hidden,heads", [
    ("tiny", 2, 128, 2), ("mini", 4, 256, 4), ("small", 4, 512, 8), ("medium", 8, 512, 8),
    ("base", 12, 768, 12), ("large", 24, 1024, 16)])
def test_presets_have_berts_published_sizes(preset, layers, hidden, heads):
  c = model_lib.bert_config(preset)
  assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (layers, hidden, heads)
  assert c.intermediate_size == 4 * hidden
  assert (c.max_position_embeddings, c.type_vocab_size, c.layer_norm_eps) == (512, 2, 1e-12)
  assert c.hidden_act == "gelu" and c.hidden_dropout_prob == c.attention_probs_dropout_prob == 0.1


def test_base_parameter_count_matches_bert_base():
  config = model_lib.bert_config("base")
  abstract = jax.eval_shape(lambda: model_lib.BertForPreTraining(config).init(
      jax.random.key(0), **model_lib.dummy_inputs(config)))
  count = sum(x.size for x in jax.tree.leaves(nn.unbox(abstract["params"])))
  # transformers' BertForPreTraining(bert-base-uncased) has 110,106,428 parameters
  # (decoder tied to the word embeddings).
  assert count == 110_106_428


def test_bad_configs_name_the_field():
  with pytest.raises(ValueError, match="hidden_size .*num_attention_heads"):
    model_lib.bert_config("tiny", num_attention_heads=3)
  with pytest.raises(ValueError, match="unknown BERT preset 'huge'"):
    model_lib.bert_config("huge")
  with pytest.raises(ValueError, match=r"unknown BertConfig field\(s\) \['hiden_size'\]"):
    model_lib.bert_config("tiny", hiden_size=3)
  with pytest.raises(ValueError, match="attention_impl"):
    model_lib.bert_config("tiny", attention_impl="flash")
  with pytest.raises(ValueError, match="dtype"):
    model_lib.bert_config("tiny", dtype="float64")


def test_padding_does_not_leak_into_real_tokens():
  config = model_lib.bert_config("tiny", vocab_size=64)
  batch = _batch(config)
  params = _init(config, batch)
  apply = lambda b: model_lib.BertModel(config).apply({"params": params["bert"]}, b["input_ids"],
                                                      b["token_type_ids"], b["attention_mask"])
  seq1, pooled1 = apply(batch)
  changed = dict(batch, input_ids=batch["input_ids"].copy())
  changed["input_ids"][1, 8:] = 7          # different content under the padding mask
  seq2, pooled2 = apply(changed)
  np.testing.assert_allclose(seq1[:, :8], seq2[:, :8], atol=1e-6)
  np.testing.assert_allclose(pooled1, pooled2, atol=1e-6)
  assert np.abs(np.asarray(seq1[1, 8:] - seq2[1, 8:])).max() > 1e-3   # the mask is what protects them


def test_mlm_head_at_positions_equals_full_sequence_gathered():
  config = model_lib.bert_config("tiny", vocab_size=64)
  batch = _batch(config)
  params = _init(config, batch)
  m = model_lib.BertForPreTraining(config)
  mlm, nsp = m.apply({"params": params}, **batch)
  full = dict(batch, masked_lm_positions=None)
  mlm_full, nsp_full = m.apply({"params": params}, **full)
  assert mlm.shape == (2, 4, 64) and mlm_full.shape == (2, 12, 64) and nsp.shape == (2, 2)
  gathered = np.take_along_axis(np.asarray(mlm_full), batch["masked_lm_positions"][..., None], axis=1)
  np.testing.assert_allclose(mlm, gathered, atol=1e-5)
  np.testing.assert_allclose(nsp, nsp_full, atol=1e-6)


def test_decoder_is_tied_to_word_embeddings():
  config = model_lib.bert_config("tiny", vocab_size=64)
  batch = _batch(config)
  params = _init(config, batch)
  assert "decoder" not in params["cls"]["predictions"]
  bumped = jax.tree.map(lambda x: x, params)
  emb = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
  bumped["bert"]["embeddings"]["word_embeddings"]["embedding"] = emb.at[11].add(1.0)
  m = model_lib.BertForPreTraining(config)
  a, _ = m.apply({"params": params}, **batch)
  b, _ = m.apply({"params": bumped}, **batch)
  # Row 11 of the table is also output class 11: its logits move even where token 11 is absent.
  assert np.abs(np.asarray(a[..., 11] - b[..., 11])).min() > 0


def test_bf16_compute_with_fp32_params():
  config = model_lib.bert_config("tiny", vocab_size=64)
  batch = _batch(config)
  params = _init(config, batch)
  bf16 = config.replace(dtype="bfloat16")
  variables = model_lib.BertForPreTraining(bf16).init(jax.random.key(0), **batch)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(variables)))
  mlm16, nsp16 = model_lib.BertForPreTraining(bf16).apply({"params": params}, **batch)
  mlm32, nsp32 = model_lib.BertForPreTraining(config).apply({"params": params}, **batch)
  assert mlm16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(mlm16, np.float32), mlm32, atol=0.1)
  np.testing.assert_allclose(np.asarray(nsp16, np.float32), nsp32, atol=0.05)
  half = model_lib.BertForPreTraining(config.replace(param_dtype="bfloat16")).init(jax.random.key(0), **batch)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(nn.unbox(half)))


def test_scan_and_remat_compute_the_same_function():
  config = model_lib.bert_config("tiny", vocab_size=64, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
  batch = _batch(config)
  params = _init(config, batch)

  def loss(cfg, p):
    mlm, nsp = model_lib.BertForPreTraining(cfg).apply({"params": p}, **batch)
    return jnp.sum(mlm ** 2) * 1e-3 + jnp.sum(nsp)

  # Jitted: one compile per variant rather than one per operation.
  ref_loss, ref_grad = jax.jit(jax.value_and_grad(functools_partial(loss, config)))(params)
  stacked = interop.stack_layers(params)
  for cfg, p in [(config.replace(scan_layers=True), stacked),
                 (config.replace(remat_policy="full"), params),
                 (config.replace(remat_policy="dots", scan_layers=True), stacked)]:
    value, grad = jax.jit(jax.value_and_grad(functools_partial(loss, cfg)))(p)
    np.testing.assert_allclose(value, ref_loss, rtol=1e-5)
    if cfg.scan_layers:
      grad = interop.unstack_layers(grad)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grad, ref_grad)


def functools_partial(fn, cfg):
  return lambda p: fn(cfg, p)


def test_dropout_is_keyed_and_off_when_deterministic():
  config = model_lib.bert_config("tiny", vocab_size=64)
  batch = _batch(config)
  params = _init(config, batch)
  m = model_lib.BertForPreTraining(config)
  run = lambda key: m.apply({"params": params}, **batch, deterministic=False, rngs={"dropout": key})[0]
  a, b, c = run(jax.random.key(1)), run(jax.random.key(1)), run(jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a - c)).max() > 1e-3
  d = m.apply({"params": params}, **batch)[0]
  assert np.abs(np.asarray(a - d)).max() > 1e-3


def test_fused_attention_layout_matches_ours():
  # The cudnn path calls jax.nn.dot_product_attention with our layout and mask;
  # its portable implementation checks that layout here (cuDNN itself needs a GPU).
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 10, 4, 16)), jnp.float32) for _ in range(3))
  lengths = np.array([10, 6])
  mask = jnp.asarray(np.arange(10)[None, :] < lengths[:, None])[:, None, None, :]
  ours = model_lib._xla_attention(q, k, v, mask)
  fused = model_lib.fused_attention(q, k, v, mask, implementation="xla")
  np.testing.assert_allclose(ours, fused, atol=1e-5)


def test_cudnn_training_with_attention_dropout_is_refused():
  config = model_lib.bert_config("tiny", vocab_size=64, attention_impl="cudnn")
  batch = _batch(config)
  params = _init(config.replace(attention_impl="xla"), batch)
  with pytest.raises(ValueError, match="attention_probs_dropout_prob=0.0"):
    model_lib.BertForPreTraining(config).apply(
        {"params": params}, **batch, deterministic=False, rngs={"dropout": jax.random.key(0)})


def test_sequence_longer_than_positions_is_refused():
  config = model_lib.bert_config("tiny", vocab_size=64, max_position_embeddings=8)
  batch = _batch(config)
  with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
    model_lib.BertForPreTraining(config).init(jax.random.key(0), **batch)


def test_task_heads():
  config = model_lib.bert_config("tiny", vocab_size=64)
  batch = _batch(config)
  del batch["masked_lm_positions"]
  seq_cls = model_lib.BertForSequenceClassification(config, num_labels=3)
  v = seq_cls.init(jax.random.key(0), **batch)
  assert seq_cls.apply(v, **batch).shape == (2, 3)
  tok_cls = model_lib.BertForTokenClassification(config, num_labels=5)
  v = tok_cls.init(jax.random.key(0), **batch)
  assert tok_cls.apply(v, **batch).shape == (2, 12, 5)
  assert "pooler" not in v["params"]["bert"]


def test_importing_bert_jax_imports_no_text_pipeline():
  code = ("import sys, bert_jax.model, bert_jax.partitioning, bert_jax.interop; "
          "bad = [m for m in ('data_pipeline', 'sentencepiece', 'tokenizers', 'tensorflow_datasets', "
          "'grain', 'array_record', 'tensorflow', 'torch', 'transformers') if m in sys.modules]; "
          "print(bad); sys.exit(1 if bad else 0)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
