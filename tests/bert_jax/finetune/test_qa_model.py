"""The QA head against transformers' BertForQuestionAnswering, both directions, fp32."""
import json
import os

import jax
import numpy as np
from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax.finetune import tasks
from bert_jax import tree as tree_lib
from tests.helpers import finetune as F

CONFIG = model_lib.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=32)


def _inputs(seed=0, batch=3, length=20):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, CONFIG.vocab_size, (batch, length)).astype(np.int32)
  types = np.zeros_like(ids)
  types[:, 8:] = 1
  mask = np.ones_like(ids)
  mask[1, 15:] = 0  # a padded row
  return ids, types, mask


MODEL = model_lib.BertForQuestionAnswering(CONFIG)
# One compilation each (op-by-op dispatch of an unjitted Flax model is slow on CPU).
_apply = jax.jit(lambda p, i, t, m: MODEL.apply({"params": p}, i, t, m, deterministic=True))


def _ours(params, ids, types, mask):
  start, end = _apply(params, ids, types, mask)
  return np.asarray(start), np.asarray(end)


def _fresh(seed):
  return F.numpy_params(MODEL, CONFIG, seed)


def test_head_shapes_and_names():
  params = _fresh(0)
  assert params["qa_outputs"]["kernel"].shape == (32, 2)
  assert "pooler" not in params["bert"]  # as transformers: BertModel(add_pooling_layer=False)
  start, end = _ours(params, *_inputs())
  assert start.shape == end.shape == (3, 20)


def test_our_qa_model_loads_in_transformers_with_the_same_logits(tmp_path):
  import torch
  from transformers import AutoModelForQuestionAnswering
  params = _fresh(1)
  # Give the head non-trivial biases so that a swapped start / end would show.
  params["qa_outputs"]["bias"] = np.array([0.3, -0.7], np.float32)
  directory = str(tmp_path / "qa")
  interop.save_hf(CONFIG, params, directory)
  config_path = os.path.join(directory, interop.CONFIG_NAME)
  with open(config_path) as f:
    hf = json.load(f)
  hf["architectures"] = ["BertForQuestionAnswering"]
  with open(config_path, "w") as f:
    json.dump(hf, f)
  model, info = AutoModelForQuestionAnswering.from_pretrained(directory, output_loading_info=True)
  assert type(model).__name__ == "BertForQuestionAnswering"
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids, types, mask = _inputs()
  with torch.no_grad():
    out = model.eval()(input_ids=torch.tensor(ids, dtype=torch.long),
                       token_type_ids=torch.tensor(types, dtype=torch.long),
                       attention_mask=torch.tensor(mask, dtype=torch.long))
  start, end = _ours(params, ids, types, mask)
  assert np.max(np.abs(out.start_logits.numpy() - start)) <= 1e-4
  assert np.max(np.abs(out.end_logits.numpy() - end)) <= 1e-4


def test_a_transformers_qa_checkpoint_loads_with_its_head(tmp_path):
  import torch
  import transformers
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(**interop.config_to_hf(CONFIG))
  theirs = transformers.BertForQuestionAnswering(hf_config).eval()
  directory = str(tmp_path / "hf_qa")
  theirs.save_pretrained(directory)
  config, params = interop.load_hf(directory)
  tensors = interop.read_state_dict(directory)
  qa, classification = tasks.get("qa"), tasks.get("classification")
  head = qa.head_from_hf(tensors, 0, config.hidden_size)
  assert head is not None and set(head) == {"qa_outputs"}
  assert classification.head_from_hf(tensors, 2, config.hidden_size) is None
  params = {"bert": params["bert"], **head}
  ids, types, mask = _inputs(1)
  with torch.no_grad():
    out = theirs(input_ids=torch.tensor(ids, dtype=torch.long),
                 token_type_ids=torch.tensor(types, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long))
  start, end = _ours(params, ids, types, mask)
  assert np.max(np.abs(out.start_logits.numpy() - start)) <= 1e-4
  assert np.max(np.abs(out.end_logits.numpy() - end)) <= 1e-4


def test_qa_loss_of_a_window_does_not_depend_on_its_padded_width():
  """Length buckets trim a window to its bucket's width: its loss and gradients must be
  those of the full-width window, and the [PAD] embedding gets no gradient (transformers
  freezes it with padding_idx), however high the padding's logits."""
  import jax.numpy as jnp
  task = tasks.get("qa")
  params = _fresh(2)
  ids, types, mask = _inputs(3, batch=2, length=20)
  mask[:, 12:] = 0
  ids[:, 12:] = 0
  batch = dict(start_positions=np.array([9, 0], np.int32), end_positions=np.array([11, 0], np.int32))

  def loss(p, width):
    out = MODEL.apply({"params": p}, ids[:, :width], types[:, :width], mask[:, :width],
                      deterministic=True)
    return task.loss(out, {**batch, "attention_mask": jnp.asarray(mask[:, :width])})[0]

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  (full, g_full), (trimmed, g_trimmed) = grad(params, 20), grad(params, 12)
  np.testing.assert_allclose(full, trimmed, rtol=1e-5)
  flat_full, flat_trimmed = tree_lib.flatten(g_full), tree_lib.flatten(g_trimmed)
  for path, g in flat_full.items():
    np.testing.assert_allclose(g, flat_trimmed[path], rtol=1e-4, atol=1e-6, err_msg=str(path))
  word = flat_full[("bert", "embeddings", "word_embeddings", "embedding")]
  assert np.all(word[0] == 0) and np.any(word[5:] != 0)
