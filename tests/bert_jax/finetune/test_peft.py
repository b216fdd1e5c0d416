"""The PEFT family beside LoRA: adapters, prefix tuning, BitFit (bert_jax/finetune/peft)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import partitioning
from bert_jax import tree as tree_lib
from bert_jax.finetune import loop as finetune
from bert_jax.finetune import peft
from bert_jax.finetune.peft import adapters as adapters_io
from bert_jax.finetune.peft import prefix as prefix_io
from data_pipeline.finetune import readers as finetune_data
from data_pipeline.text import tokenizer as tokenizers
from tests.helpers import finetune as F

HIDDEN, LAYERS, HEADS = 32, 2, 2


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return F.make_hf_dir(str(tmp_path_factory.mktemp("init")))


def _cfg(tmp_path, hf_dir, **kw):
  base = dict(task="classification", init_from=hf_dir, output_dir=str(tmp_path / "out"),
              max_seq_length=16, learning_rate=1e-2, train_file="unused", eval_file="unused",
              adapter_size=4, prefix_length=3)
  return finetune.FinetuneConfig(**{**base, **kw})


def _batch(hf_dir, mesh, n=32):
  tok = tokenizers.load_tokenizer(hf_dir)
  examples = [finetune_data.TextExample(t, None, l, i)
              for i, (t, l) in enumerate(F.sentiment_rows(n, 0))]
  batch = finetune_data.encode_text_examples(examples, tok, 16, task="classification",
                                             label_list=["neg", "pos"])
  return partitioning.host_to_device(batch, mesh)


def _host(tree):
  return tree_lib.flatten(jax.tree.map(lambda x: np.array(x, copy=True), tree))


# Trained leaves of each method, beyond the fresh classifier (2 labels).
_EXPECTED = {
    "adapters": lambda p: peft.is_extra(p),
    "prefix": lambda p: p[-1] in peft.PREFIX_LEAVES,
    "bitfit": lambda p: p[-1] == "bias",
}
_COUNTS = {
    # two adapters per layer: down H*a + a, up a*H + H
    "adapters": LAYERS * 2 * (HIDDEN * 4 + 4 + 4 * HIDDEN + HIDDEN),
    # key and value prefixes of 3 positions x H per layer
    "prefix": LAYERS * 2 * 3 * HIDDEN,
}


@pytest.mark.parametrize("method", ["adapters", "prefix", "bitfit"])
def test_each_method_trains_only_its_parameters(tmp_path, hf_dir, method):
  bert_config, pretrained = interop.load_hf(hf_dir)
  cfg = _cfg(tmp_path, hf_dir, peft=method)
  mesh = partitioning.make_mesh(cfg.mesh_shape)
  setup = finetune.build(cfg, bert_config, {"bert": pretrained["bert"]}, 2, mesh, 4)
  trained = tree_lib.flatten(setup.state.params["model"])
  classifier = {p for p in trained if p[0] == "classifier"}
  assert len(classifier) == 2
  assert set(trained) - classifier == {
      p for p in tree_lib.flatten(lora_free(setup)) if _EXPECTED[method](p) and p[0] == "bert"}
  head = HIDDEN * 2 + 2
  if method in _COUNTS:
    assert setup.trainable_count == _COUNTS[method] + head
  else:  # every bias of the encoder (pooler included), and the classifier
    biases = sum(v.size for p, v in tree_lib.flatten(pretrained["bert"]).items() if p[-1] == "bias")
    assert setup.trainable_count == biases + head
  frozen_before, trained_before = _host(setup.frozen), _host(setup.state.params)
  batch, state = _batch(hf_dir, mesh), setup.state
  for _ in range(4):
    state, metrics = setup.train(state, setup.frozen, batch)
  assert np.isfinite(float(metrics["loss"]))
  for path, after in _host(setup.frozen).items():
    assert after.tobytes() == frozen_before[path].tobytes(), path
  moved = [p for p, after in _host(state.params).items()
           if not np.array_equal(after, trained_before[p])]
  # Everything trained moves, except an adapter's down-projection at its very first step
  # (its gradient is zero while `up` is zero), which moves from the second on.
  assert set(moved) == set(trained_before), set(trained_before) - set(moved)


def lora_free(setup):
  return finetune.lora.combine(setup.state.params["model"], setup.frozen)


def test_adapters_start_as_the_identity(hf_dir):
  bert_config, pretrained = interop.load_hf(hf_dir)
  plain = model_lib.BertForSequenceClassification(bert_config, 2)
  with_adapters = model_lib.BertForSequenceClassification(bert_config.replace(adapter_size=8), 2)
  ids = jnp.asarray(np.random.default_rng(0).integers(5, 50, (3, 10)), jnp.int32)
  mask = jnp.asarray(np.arange(10)[None] < np.array([[10], [6], [3]]), jnp.int32)
  params = jax.tree.map(np.asarray, model_lib.nn.unbox(with_adapters.init(
      jax.random.PRNGKey(1), ids, jnp.zeros_like(ids), mask)["params"]))
  base, extras = peft.split_extras(params)
  assert len(tree_lib.flatten(extras)) == LAYERS * 2 * 4  # down/up kernel/bias, 2 per layer
  assert all(np.abs(v).sum() > 0 for p, v in tree_lib.flatten(extras).items()
             if p[-2] == "down" and p[-1] == "kernel")
  np.testing.assert_array_equal(with_adapters.apply({"params": params}, ids, 0 * ids, mask),
                                plain.apply({"params": base}, ids, 0 * ids, mask))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_prefix_attention_sees_prefixes_and_masks_padding():
  config = F.tiny_config(60).replace(prefix_length=3)
  layer = model_lib.BertSelfAttention(config)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 5, HIDDEN)), jnp.float32)
  lengths = np.array([5, 2])
  mask = model_lib.attention_mask_4d(jnp.asarray(np.arange(5)[None] < lengths[:, None]))
  ctx = {"mask": mask}  # the attention context (model.BertModel builds it)
  params = model_lib.nn.unbox(layer.init(jax.random.PRNGKey(0), x, ctx,
                                         deterministic=True)["params"])
  params = jax.tree.map(lambda v: np.asarray(v) + rng.normal(size=v.shape) * 0.5, params)
  out = np.asarray(layer.apply({"params": params}, x, ctx, deterministic=True))

  def proj(name, h):
    return np.einsum("blh,hnd->blnd", h, params[name]["kernel"]) + params[name]["bias"]

  xs = np.asarray(x)
  for b, n in enumerate(lengths):
    q, k, v = (proj(name, xs[b:b + 1])[0] for name in ("query", "key", "value"))
    # The reference: prefixes first, then the row's real tokens only; padding is not there.
    keys = np.concatenate([params["prefix_key"], k[:n]])
    values = np.concatenate([params["prefix_value"], v[:n]])
    probs = _softmax(np.einsum("qnd,knd->nqk", q, keys) / np.sqrt(config.head_dim))
    expected = np.einsum("nqk,knd->qnd", probs, values)
    np.testing.assert_allclose(out[b, :n], expected[:n], rtol=1e-5, atol=1e-5)

  # Padding attended by nobody: changing the padded tokens changes no real token's output.
  x2 = xs.copy()
  x2[1, 2:] = rng.normal(size=(3, HIDDEN)) * 10
  out2 = np.asarray(layer.apply({"params": params}, jnp.asarray(x2), ctx, deterministic=True))
  np.testing.assert_allclose(out2[1, :2], out[1, :2], rtol=1e-6, atol=1e-6)
  # Packed rows' [B, 1, L, L] mask grows the same way.
  packed = model_lib.attention_mask_4d(None, jnp.asarray([[1, 1, 1, 2, 2], [1, 1, 0, 0, 0]]))
  out3 = np.asarray(layer.apply({"params": params}, x, {"mask": packed}, deterministic=True))
  np.testing.assert_allclose(out3[1, :2], out[1, :2], rtol=1e-5, atol=1e-5)


def test_adapter_export_matches_transformers_with_the_same_bottlenecks(tmp_path, hf_dir):
  """Our adapters file, added to transformers' BERT through hooks, gives our logits."""
  import torch
  from transformers import AutoModelForSequenceClassification
  bert_config, pretrained = interop.load_hf(hf_dir)
  config = bert_config.replace(adapter_size=4)
  model = model_lib.BertForSequenceClassification(config, 2)
  ids = np.random.default_rng(0).integers(5, 50, (3, 10)).astype(np.int32)
  mask = (np.arange(10)[None] < np.array([[10], [6], [3]])).astype(np.int32)
  params = jax.tree.map(np.asarray, model_lib.nn.unbox(model.init(
      jax.random.PRNGKey(1), ids, 0 * ids, mask)["params"]))
  rng = np.random.default_rng(2)  # trained-looking adapters: up no longer zero
  params = jax.tree.map(lambda v: v + rng.normal(size=v.shape).astype(v.dtype) * 0.1, params)
  ours = np.asarray(model.apply({"params": params}, ids, 0 * ids, mask))
  plain, extras = peft.split_extras(params)
  interop.save_hf(config, plain, str(tmp_path / "hf"))
  with open(tmp_path / "hf" / "config.json") as f:
    hf = json.load(f)
  hf.update(architectures=["BertForSequenceClassification"], num_labels=2)
  (tmp_path / "hf" / "config.json").write_text(json.dumps(hf))
  adapters_io.save(str(tmp_path / "ad"), config, extras)
  assert adapters_io.from_state_dict(adapters_io.to_state_dict(extras)).keys() == extras.keys()
  state = adapters_io.load(str(tmp_path / "ad"))
  torch_model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
  weights = adapters_io.to_state_dict(extras)

  def hook(prefix):
    w = {k.split(".adapters.bert_jax.")[1]: torch.tensor(v) for k, v in weights.items()
         if k.startswith(prefix + ".adapters.")}

    def add_adapter(module, args, output):  # after the projection, before the residual
      h = torch.nn.functional.linear(output, w["adapter_down.0.weight"], w["adapter_down.0.bias"])
      return output + torch.nn.functional.linear(torch.nn.functional.silu(h),
                                                 w["adapter_up.weight"], w["adapter_up.bias"])
    return add_adapter

  for i, layer in enumerate(torch_model.bert.encoder.layer):
    layer.attention.output.dense.register_forward_hook(hook(f"bert.encoder.layer.{i}.attention.output"))
    layer.output.dense.register_forward_hook(hook(f"bert.encoder.layer.{i}.output"))
  with torch.no_grad():
    theirs = torch_model(input_ids=torch.tensor(ids, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(theirs, ours, atol=1e-4)
  flat = tree_lib.flatten(extras)
  for path, value in tree_lib.flatten(state).items():
    np.testing.assert_array_equal(value, flat[path])


def test_prefix_export_is_peft_prefix_tuning_layout(tmp_path):
  config = F.tiny_config(60).replace(prefix_length=3)
  rng = np.random.default_rng(0)
  extras = tree_lib.unflatten({
      ("bert", "encoder", f"layer_{i}", "attention", "self", leaf):
          rng.normal(size=(3, HEADS, HIDDEN // HEADS)).astype(np.float32)
      for i in range(LAYERS) for leaf in peft.PREFIX_LEAVES})
  prefix_io.save(str(tmp_path / "prefix"), config, extras, "BertForSequenceClassification")
  table = prefix_io.to_prompt_embeddings(extras, LAYERS)
  # peft's get_prompt: view [P, 2L, N, D], permute to [2L, N, P, D], layer i = (2i, 2i + 1).
  import torch
  views = torch.tensor(table).view(3, LAYERS * 2, HEADS, HIDDEN // HEADS).permute(1, 2, 0, 3)
  for i in range(LAYERS):
    for j, leaf in enumerate(peft.PREFIX_LEAVES):
      np.testing.assert_array_equal(views[2 * i + j].permute(1, 0, 2).numpy(),
                                    extras["bert"]["encoder"][f"layer_{i}"]["attention"]["self"][leaf])
  loaded = prefix_io.load(str(tmp_path / "prefix"), config)
  for path, value in tree_lib.flatten(loaded).items():
    np.testing.assert_array_equal(value, tree_lib.flatten(extras)[path])
  # peft reads the directory as a PREFIX_TUNING adapter of this BERT's shape.
  import peft as peft_lib
  peft_config = peft_lib.PeftConfig.from_pretrained(str(tmp_path / "prefix"))
  assert peft_config.peft_type == "PREFIX_TUNING" and peft_config.num_virtual_tokens == 3
  assert (peft_config.num_layers, peft_config.token_dim) == (LAYERS, HIDDEN)
  from safetensors.torch import load_file
  np.testing.assert_array_equal(
      load_file(str(tmp_path / "prefix" / "adapter_model.safetensors"))["prompt_embeddings"].numpy(),
      table)


@pytest.mark.parametrize("method,lr", [("adapters", 1e-2), ("prefix", 3e-2), ("bitfit", 3e-2)])
def test_end_to_end_run_exports_and_reloads(tmp_path, hf_dir, method, lr):
  train = F.write_tsv(tmp_path / "train.tsv", F.sentiment_rows(64, 0))
  dev = F.write_tsv(tmp_path / "dev.tsv", F.sentiment_rows(16, 1))
  cfg = _cfg(tmp_path, hf_dir, peft=method, train_file=str(train), eval_file=str(dev),
             num_epochs=1, learning_rate=lr, log_every_steps=1000, length_buckets=1)
  results = F.run(cfg)
  assert results["peft"] == method and results["lora_rank"] == 0
  assert 0 < results["trainable_parameters"] < results["total_parameters"]
  saved = F.read_json(tmp_path / "out" / "eval_results.json")
  assert saved["trainable_parameters"] == results["trainable_parameters"]
  best = tmp_path / "out" / "best_model"
  assert F.read_json(best / "finetune.json")["peft"] == method
  extras_dir = peft.EXTRAS_DIRS.get(method)
  assert (extras_dir is not None) == (best / (extras_dir or "x")).is_dir()
  if extras_dir is None:  # BitFit exports plain BERT, reloaded as any other (test_loop)
    return
  # The export reloads (its added weights with it) and scores the same.
  again = F.run(finetune.FinetuneConfig(
      task="classification", init_from=str(best), output_dir=str(tmp_path / "again"),
      eval_file=str(dev), max_seq_length=16, peft=method, length_buckets=1))  # sizes: saved
  assert again["eval_accuracy"] == results["eval_accuracy"]
  # Loading it as another method would drop those weights: refused.
  with pytest.raises(ValueError, match=f"--peft={method}"):
    F.run(finetune.FinetuneConfig(task="classification", init_from=str(best),
                                  output_dir=str(tmp_path / "wrong"), eval_file=str(dev),
                                  max_seq_length=16))


def test_peft_flag_resolution():
  base = dict(task="classification", init_from="x", output_dir="y", eval_file="e")
  assert finetune.FinetuneConfig(**base).peft_method == "none"
  assert finetune.FinetuneConfig(**base, lora_rank=4).peft_method == "lora"
  assert finetune.FinetuneConfig(**base, peft="lora").effective_lora_rank == peft.DEFAULT_LORA_RANK
  assert finetune.FinetuneConfig(**base, peft="bitfit").effective_lora_rank == 0
  with pytest.raises(ValueError, match="lora_rank=4 is for --peft=lora"):
    finetune.FinetuneConfig(**base, peft="adapters", lora_rank=4).validate()
  with pytest.raises(ValueError, match="adapter_size=0"):
    finetune.FinetuneConfig(**base, peft="adapters", adapter_size=0).validate()
