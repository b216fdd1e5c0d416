"""Teacher loading, fingerprints, layer initialisation and the internals distillation reads."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax.distillation import internals
from bert_jax.distillation import teacher as teacher_lib


def _config(layers, **kw):
  return model_lib.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=layers,
                              num_attention_heads=4, intermediate_size=64,
                              max_position_embeddings=32, **kw)


def _params(config, seed):
  model = model_lib.BertForPreTraining(config)
  return model, nn.unbox(model.init(jax.random.key(seed), **model_lib.dummy_inputs(config))["params"])


@pytest.fixture(scope="module")
def hf_teacher(tmp_path_factory):
  config = _config(4)
  _, params = _params(config, 0)
  path = str(tmp_path_factory.mktemp("teacher"))
  interop.save_hf(config, jax.device_get(params), path)
  return path


def test_load_teacher_from_hf_and_fingerprint(hf_teacher, tmp_path):
  t = teacher_lib.load_teacher(hf_teacher)
  assert t.config.num_hidden_layers == 4
  assert t.fingerprint == teacher_lib.load_teacher(hf_teacher).fingerprint
  changed = jax.tree.map(np.array, dict(t.params))
  changed["bert"]["embeddings"]["word_embeddings"]["embedding"][0, 0] += 1.0
  assert teacher_lib.fingerprint(changed) != t.fingerprint
  with pytest.raises(ValueError, match="not a model directory"):
    teacher_lib.load_teacher(str(tmp_path))
  with pytest.raises(ValueError, match="no such directory"):
    teacher_lib.load_teacher(str(tmp_path / "absent"))


def test_student_from_every_other_teacher_layer(hf_teacher):
  t = teacher_lib.load_teacher(hf_teacher)
  _, student = _params(_config(2), 1)
  layers = teacher_lib.every_other_layer(4)
  assert layers == (0, 2)
  init = teacher_lib.init_student_from_teacher(jax.device_get(student), t, layers)
  enc_s, enc_t = init["bert"]["encoder"], t.params["bert"]["encoder"]
  for i, j in enumerate(layers):
    for a, b in zip(jax.tree.leaves(enc_s[f"layer_{i}"]), jax.tree.leaves(enc_t[f"layer_{j}"])):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(init["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                t.params["bert"]["embeddings"]["word_embeddings"]["embedding"])
  with pytest.raises(ValueError, match=r"\[7\] outside the teacher's 4 layers"):
    teacher_lib.init_student_from_teacher(jax.device_get(student), t, (0, 7))
  with pytest.raises(ValueError, match="student has 2 layers"):
    teacher_lib.init_student_from_teacher(jax.device_get(student), t, (0,))
  narrow = _config(2, ).__class__(**{**_config(2).__dict__, "hidden_size": 16,
                                     "intermediate_size": 32})
  _, narrow_params = _params(narrow, 2)
  with pytest.raises(ValueError, match="widths and vocabularies must match"):
    teacher_lib.init_student_from_teacher(jax.device_get(narrow_params), t, (0, 2))


@pytest.mark.parametrize("scan", [False, True])
def test_internals_are_the_hidden_states_and_last_layer_projections(scan):
  config = _config(2, scan_layers=scan)
  model, params = _params(config, 3)
  batch = model_lib.dummy_inputs(config, batch_size=2, seq_len=8)
  if scan:
    with pytest.raises(ValueError, match="scan_layers=False"):
      internals.apply_with_internals(model, params, **batch, config=config, want_qkv=True)
  (mlm, nsp), got = internals.apply_with_internals(model, params, **batch, config=config,
                                                   want_qkv=not scan)
  want_mlm, want_nsp = model.apply({"params": params}, **batch)
  np.testing.assert_allclose(mlm, want_mlm, atol=1e-6)
  hidden, _ = model_lib.BertModel(config).apply({"params": params["bert"]}, batch["input_ids"],
                                                batch["token_type_ids"], batch["attention_mask"])
  np.testing.assert_allclose(got["hidden"], hidden, atol=1e-6)
  if not scan:
    assert got["query"].shape == (2, 8, 32) and got["value"].shape == (2, 8, 32)
    # The last layer's value projection of the input to the last layer.
    layer_in = model_lib.BertModel(config.__class__(**{**config.__dict__,
                                                       "num_hidden_layers": 1})).apply(
        {"params": {**params["bert"], "encoder": {"layer_0": params["bert"]["encoder"]["layer_0"]}}},
        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])[0]
    v = params["bert"]["encoder"]["layer_1"]["attention"]["self"]["value"]
    want_v = jnp.einsum("blh,hnd->blnd", layer_in, v["kernel"]) + v["bias"]
    np.testing.assert_allclose(got["value"], want_v.reshape(2, 8, 32), atol=1e-5)
