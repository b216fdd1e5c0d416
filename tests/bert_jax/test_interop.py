"""Parity with transformers' PyTorch BERT, in both directions, and checkpoint handling."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bert_jax import interop
from bert_jax import model as model_lib

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5


def _hf_config(**kw):
  base = dict(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=256, max_position_embeddings=64, type_vocab_size=2,
              hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
  base.update(kw)
  return transformers.BertConfig(**base)


def _inputs(vocab, batch=3, length=16, predictions=5, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, (batch, length)).astype(np.int32)
  types = np.zeros_like(ids)
  types[:, length // 2:] = 1
  mask = np.ones_like(ids)
  lengths = [length, length - 5, 7][:batch]
  for i, n in enumerate(lengths):   # right padding, as the pipeline makes it
    mask[i, n:] = 0
    ids[i, n:] = 0
    types[i, n:] = 0
  positions = np.stack([rng.choice(n, predictions, replace=False) for n in lengths]).astype(np.int32)
  return ids, types, mask, positions


def _torch_outputs(hf_model, ids, types, mask):
  with torch.no_grad():
    t = lambda a: torch.tensor(a, dtype=torch.long)
    out = hf_model(input_ids=t(ids), token_type_ids=t(types), attention_mask=t(mask),
                   output_hidden_states=True)
  return (out.hidden_states[-1].numpy(), out.prediction_logits.numpy(),
          out.seq_relationship_logits.numpy())


def _ours(config, params, ids, types, mask, positions=None):
  seq, pooled = model_lib.BertModel(config).apply({"params": params["bert"]}, ids, types, mask)
  mlm, nsp = model_lib.BertForPreTraining(config).apply({"params": params}, ids, types, mask, positions)
  return np.asarray(seq), np.asarray(pooled), np.asarray(mlm), np.asarray(nsp)


def _max_diff(a, b, mask=None):
  diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
  if mask is not None:
    diff = diff[mask.astype(bool)]
  return float(diff.max())


def test_transformers_to_ours_parity(tmp_path):
  torch.manual_seed(0)
  hf = transformers.BertForPreTraining(_hf_config()).eval()
  hf.save_pretrained(tmp_path)
  config, params = interop.load_hf(str(tmp_path), require_pretraining_heads=True)
  ids, types, mask, positions = _inputs(config.vocab_size)
  hidden, prediction_logits, nsp_ref = _torch_outputs(hf, ids, types, mask)
  with torch.no_grad():
    pooled_ref = hf.bert(input_ids=torch.tensor(ids, dtype=torch.long),
                         token_type_ids=torch.tensor(types, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long)).pooler_output.numpy()
  seq, pooled, mlm, nsp = _ours(config, params, ids, types, mask, positions)
  full_mlm = _ours(config, params, ids, types, mask)[2]
  gathered_ref = np.take_along_axis(prediction_logits, positions[..., None], axis=1)
  # Padding positions are compared too: both models compute them the same way.
  assert _max_diff(seq, hidden) <= TOL
  assert _max_diff(pooled, pooled_ref) <= TOL
  assert _max_diff(mlm, gathered_ref) <= TOL
  assert _max_diff(full_mlm, prediction_logits) <= TOL
  assert _max_diff(nsp, nsp_ref) <= TOL


def test_ours_to_transformers_parity(tmp_path):
  config = model_lib.bert_config("tiny", vocab_size=101, max_position_embeddings=64)
  ids, types, mask, positions = _inputs(config.vocab_size, seed=1)
  variables = model_lib.BertForPreTraining(config).init(jax.random.key(3), ids, types, mask, positions)
  params = jax.tree.map(np.asarray, nn.unbox(variables["params"]))
  # Random init leaves biases and LayerNorms at 0 / 1: perturb them so the test sees them.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: x + rng.normal(0, 0.02, x.shape).astype(x.dtype), params)
  interop.save_hf(config, params, str(tmp_path))
  hf, info = transformers.BertForPreTraining.from_pretrained(str(tmp_path), output_loading_info=True)
  hf.eval()
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  hidden, prediction_logits, nsp_ref = _torch_outputs(hf, ids, types, mask)
  seq, _, mlm, nsp = _ours(config, params, ids, types, mask)
  assert _max_diff(seq, hidden) <= TOL
  assert _max_diff(mlm, prediction_logits) <= TOL
  assert _max_diff(nsp, nsp_ref) <= TOL


def test_round_trip_is_exact_and_scan_independent(tmp_path):
  config = model_lib.bert_config("tiny", vocab_size=50, max_position_embeddings=32)
  variables = model_lib.BertForPreTraining(config).init(jax.random.key(0), **model_lib.dummy_inputs(config))
  params = jax.tree.map(np.asarray, nn.unbox(variables["params"]))
  interop.save_hf(config, params, str(tmp_path))
  config2, params2 = interop.load_hf(str(tmp_path))
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  # A scanned config reads the same checkpoint into stacked layers, and writes it back identically.
  config3, stacked = interop.load_hf(str(tmp_path), scan_layers=True)
  assert stacked["bert"]["encoder"]["layers"]["attention"]["self"]["query"]["kernel"].shape[0] == 2
  interop.save_hf(config3, stacked, str(tmp_path / "again"))
  a, b = load_file(str(tmp_path / "model.safetensors")), load_file(str(tmp_path / "again/model.safetensors"))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_encoder_only_checkpoint_reports_absent_heads(tmp_path):
  torch.manual_seed(0)
  hf = transformers.BertModel(_hf_config(), add_pooling_layer=False).eval()
  hf.save_pretrained(tmp_path)
  config, params, report = interop.load_hf_with_report(str(tmp_path))
  assert report.encoder_only
  assert set(report.absent) == {"cls", "bert/pooler"}
  assert set(params) == {"bert"} and "pooler" not in params["bert"]
  ids, types, mask, _ = _inputs(config.vocab_size)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(types, dtype=torch.long),
             attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
  seq, _ = model_lib.BertModel(config, add_pooling_layer=False).apply({"params": params["bert"]}, ids, types, mask)
  assert _max_diff(seq, ref) <= TOL
  with pytest.raises(ValueError, match="pretraining heads were asked for"):
    interop.load_hf(str(tmp_path), require_pretraining_heads=True)


def test_shape_mismatch_names_the_parameter(tmp_path):
  torch.manual_seed(0)
  transformers.BertForPreTraining(_hf_config()).save_pretrained(tmp_path)
  cfg_path = tmp_path / "config.json"
  hf_cfg = json.loads(cfg_path.read_text())
  hf_cfg["intermediate_size"] = 128
  cfg_path.write_text(json.dumps(hf_cfg))
  with pytest.raises(ValueError, match=r"6 parameter\(s\) do not match") as err:
    interop.load_hf(str(tmp_path))
  assert "bert.encoder.layer.1.intermediate.dense.weight" in str(err.value)


def test_missing_encoder_weight_is_an_error(tmp_path):
  torch.manual_seed(0)
  transformers.BertForPreTraining(_hf_config()).save_pretrained(tmp_path)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  del tensors["bert.encoder.layer.1.output.dense.weight"]
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"layer\.1\.output\.dense\.weight"):
    interop.load_hf(str(tmp_path))


def test_not_a_bert_checkpoint(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(ValueError, match="not a BERT checkpoint"):
    interop.load_hf(str(tmp_path))
  with pytest.raises(ValueError, match="not a directory"):
    interop.load_hf(str(tmp_path / "nope"))
  os.remove(tmp_path / "config.json")
  with pytest.raises(ValueError, match="no config.json"):
    interop.load_hf(str(tmp_path))


def test_pytorch_bin_checkpoint_reads_like_safetensors(tmp_path):
  torch.manual_seed(0)
  hf = transformers.BertForPreTraining(_hf_config())
  hf.save_pretrained(tmp_path / "st")
  # An older export: config.json beside a torch.save'd state dict (transformers 5
  # writes only safetensors itself).
  (tmp_path / "bin").mkdir()
  (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
  torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  _, a = interop.load_hf(str(tmp_path / "st"))
  _, b = interop.load_hf(str(tmp_path / "bin"))
  jax.tree.map(np.testing.assert_array_equal, a, b)
