"""ModernBERT parity with transformers (the pinned 5.24): import and export, fp32, random
weights, padding, a sequence longer than the local window; unsupported options refused."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_jax import interop  # noqa: E402
from bert_jax import model as model_lib  # noqa: E402

L = 40  # > the window (8) and its half: local layers see only part of the row
TOL = 1e-5


def _hf_config(**overrides):
  base = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
              num_attention_heads=2, max_position_embeddings=64, local_attention=8,
              global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=1, eos_token_id=2,
              cls_token_id=1, sep_token_id=2, global_rope_theta=1000.0, local_rope_theta=50.0)
  return transformers.ModernBertConfig(**{**base, **overrides})


def _randomise(module, seed):
  """Every parameter random (norm weights and biases too), so each one's mapping counts."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      base = 1.0 if name.endswith("norm.weight") else 0.0
      p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))


def _inputs():
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 96, (2, L)).astype(np.int64)
  mask = np.ones((2, L), np.int64)
  mask[1, L - 13:] = 0
  ids[1, L - 13:] = 0
  return ids, mask


def _hf_logits(hf_model, ids, mask):
  with torch.no_grad():
    out = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


def _our_logits(config, params, ids, mask):
  return np.asarray(model_lib.BertForPreTraining(config).apply(
      {"params": params}, jnp.asarray(ids, jnp.int32), None, jnp.asarray(mask, jnp.int32))[0])


def _max_diff(a, b, mask):
  real = mask.astype(bool)
  return float(np.max(np.abs(a[real] - b[real])))


@pytest.mark.parametrize("biases", [False, True])
def test_import_matches_transformers_masked_lm(tmp_path, biases):
  hf_config = _hf_config(attention_bias=biases, mlp_bias=biases, classifier_bias=biases,
                         norm_bias=biases)
  hf_model = transformers.ModernBertForMaskedLM(hf_config).eval()
  _randomise(hf_model, seed=1)
  hf_model.save_pretrained(tmp_path)
  config, params, report = interop.load_hf_with_report(str(tmp_path))
  assert not report.absent and not report.ignored, report
  assert config.sliding_window == 8 and config.global_every == 3
  assert (config.rope_theta, config.local_rope_theta) == (1000.0, 50.0)
  ids, mask = _inputs()
  diff = _max_diff(_our_logits(config, params, ids, mask), _hf_logits(hf_model, ids, mask), mask)
  print(f"import parity (biases={biases}): max |logit diff| {diff:.2e}")
  assert diff <= TOL


def test_export_loads_in_transformers_with_the_same_logits(tmp_path):
  config = model_lib.modern_config(
      "modernbert-tiny", vocab_size=90, hidden_size=32, num_attention_heads=2,
      intermediate_size=48, num_hidden_layers=4, sliding_window=8, global_every=3,
      max_position_embeddings=64)
  assert config.padded_vocab_size == 128
  model = model_lib.BertForPreTraining(config)
  params = model.init(jax.random.key(0), **model_lib.dummy_inputs(config))["params"]
  params = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.key(1), x.shape),
                        jax.tree.map(np.asarray, jax.device_get(
                            __import__("flax").linen.unbox(params))))
  interop.save_hf(config, params, str(tmp_path))
  hf_config = json.loads((tmp_path / "config.json").read_text())
  assert hf_config["architectures"] == ["ModernBertForMaskedLM"]
  assert hf_config["vocab_size"] == 128
  hf_model = transformers.AutoModelForMaskedLM.from_pretrained(
      tmp_path, attn_implementation="eager").eval()
  assert type(hf_model).__name__ == "ModernBertForMaskedLM"
  ids, mask = _inputs()
  diff = _max_diff(_our_logits(config, params, ids, mask), _hf_logits(hf_model, ids, mask), mask)
  print(f"export parity: max |logit diff| {diff:.2e}")
  assert diff <= TOL
  # And back: the exported directory imports to the same parameters.
  config2, params2 = interop.load_hf(str(tmp_path))
  assert config2.padded_vocab_size == 128
  np.testing.assert_array_equal(
      params2["bert"]["encoder"]["layer_1"]["intermediate"]["gate"]["kernel"],
      np.asarray(params["bert"]["encoder"]["layer_1"]["intermediate"]["gate"]["kernel"]))


def test_encoder_only_modernbert_model_imports_with_the_head_reported_absent(tmp_path):
  hf_model = transformers.ModernBertModel(_hf_config()).eval()
  _randomise(hf_model, seed=2)
  hf_model.save_pretrained(tmp_path)
  config, params, report = interop.load_hf_with_report(str(tmp_path))
  assert report.encoder_only and report.absent == ("cls",)
  ids, mask = _inputs()
  ours, _ = model_lib.BertModel(config, add_pooling_layer=False).apply(
      {"params": params["bert"]}, jnp.asarray(ids, jnp.int32), None, jnp.asarray(mask, jnp.int32))
  diff = _max_diff(np.asarray(ours), _hf_logits(hf_model, ids, mask), mask)
  assert diff <= TOL
  with pytest.raises(ValueError, match="MLM head"):
    interop.load_hf(str(tmp_path), require_pretraining_heads=True)


def _write_config(tmp_path, **changes):
  hf_model = transformers.ModernBertForMaskedLM(_hf_config())
  hf_model.save_pretrained(tmp_path)
  path = tmp_path / "config.json"
  data = json.loads(path.read_text())
  data.update(changes)
  path.write_text(json.dumps(data))
  return str(tmp_path)


@pytest.mark.parametrize("changes,named", [
    (dict(classifier_pooling="mean"), "classifier_pooling"),
    (dict(decoder_bias=False), "decoder_bias"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(rope_parameters={"full_attention": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
     "rope_parameters"),
    (dict(layer_types=["sliding_attention", "full_attention", "full_attention", "full_attention"]),
     "layer_types"),
    (dict(some_future_option=True), "some_future_option"),
    (dict(local_attention=200), "sliding_window"),
])
def test_unsupported_modernbert_options_are_named(tmp_path, changes, named):
  directory = _write_config(tmp_path, **changes)
  with pytest.raises(ValueError, match=named):
    interop.load_hf(directory)


def test_unrepresentable_configs_are_refused_on_export(tmp_path):
  config = model_lib.modern_config("modernbert-tiny", norm_type="rmsnorm")
  params = model_lib.BertForPreTraining(config).init(
      jax.random.key(0), **model_lib.dummy_inputs(config))["params"]
  with pytest.raises(ValueError, match="norm_type"):
    interop.save_hf(config, __import__("flax").linen.unbox(params), str(tmp_path))
  with pytest.raises(ValueError, match="prenorm"):
    interop.config_to_hf(model_lib.bert_config("tiny", prenorm=True))
  assert not os.listdir(tmp_path)


def test_parameters_without_a_modernbert_place_are_refused_not_dropped(tmp_path):
  config = model_lib.modern_config("modernbert-tiny", num_hidden_layers=2, global_every=2)
  params = __import__("flax").linen.unbox(model_lib.BertForPreTraining(config).init(
      jax.random.key(0), **model_lib.dummy_inputs(config))["params"])
  params["bert"]["pooler"] = {"dense": {"kernel": np.zeros((128, 128), np.float32)}}
  with pytest.raises(ValueError, match="bert/pooler/dense/kernel"):
    interop.save_hf(config, params, str(tmp_path))


def _task_params(module, config, seed):
  inputs = model_lib.dummy_inputs(config, num_predictions=None)
  params = __import__("flax").linen.unbox(module.init(jax.random.key(seed), **inputs)["params"])
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(treedef, [np.asarray(x + 0.2 * jax.random.normal(k, x.shape))
                                      for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("task", ["sequence", "token", "qa"])
def test_task_models_export_as_modernbert_for_task_with_logit_parity(tmp_path, task):
  config = model_lib.modern_config(
      "modernbert-tiny", vocab_size=96, hidden_size=32, num_attention_heads=2,
      intermediate_size=48, num_hidden_layers=4, sliding_window=8, global_every=3,
      max_position_embeddings=64)
  module, hf_class, num_labels = {
      "sequence": (model_lib.BertForSequenceClassification(config, 3),
                   transformers.ModernBertForSequenceClassification, 3),
      "token": (model_lib.BertForTokenClassification(config, 5),
                transformers.ModernBertForTokenClassification, 5),
      "qa": (model_lib.BertForQuestionAnswering(config),
             transformers.ModernBertForQuestionAnswering, 2)}[task]
  params = _task_params(module, config, seed=3)
  assert "head" in params and "pooler" not in params["bert"]
  interop.save_hf(config, params, str(tmp_path))
  hf_model = hf_class.from_pretrained(tmp_path, num_labels=num_labels,
                                      attn_implementation="eager").eval()
  ids, mask = _inputs()
  ours = module.apply({"params": params}, jnp.asarray(ids, jnp.int32), None,
                      jnp.asarray(mask, jnp.int32))
  with torch.no_grad():
    out = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  if task == "qa":
    pairs = [(np.asarray(ours[0]), out.start_logits.numpy()),
             (np.asarray(ours[1]), out.end_logits.numpy())]
    diff = max(_max_diff(a, b, mask) for a, b in pairs)
  elif task == "token":
    diff = _max_diff(np.asarray(ours), out.logits.numpy(), mask)
  else:
    diff = float(np.max(np.abs(np.asarray(ours) - out.logits.numpy())))
  print(f"{task} task export parity: max |logit diff| {diff:.2e}")
  assert diff <= TOL


def test_a_fine_tuned_modernbert_task_checkpoint_is_refused_not_half_read(tmp_path):
  hf_model = transformers.ModernBertForSequenceClassification(_hf_config(num_labels=3))
  hf_model.save_pretrained(tmp_path)
  with pytest.raises(ValueError, match="ModernBertFor<Task>"):
    interop.load_hf(str(tmp_path))
