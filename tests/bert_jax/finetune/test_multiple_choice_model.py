"""The multiple-choice head against transformers' BertForMultipleChoice, both directions."""
import json
import os

import jax
import numpy as np

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax.finetune import tasks
from bert_jax.finetune.tasks import multiple_choice as mc
from tests.helpers import finetune as F

CONFIG = model_lib.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=32)
MODEL = mc.BertForMultipleChoice(CONFIG)
_apply = jax.jit(lambda p, i, t, m: MODEL.apply({"params": p}, i, t, m, deterministic=True))


def _inputs(seed=0, batch=3, choices=4, length=20):
  """[B, N, L] as transformers takes them: two segments, some candidates padded short."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, CONFIG.vocab_size, (batch, choices, length)).astype(np.int32)
  types = np.zeros_like(ids)
  types[..., 8:] = 1
  mask = np.ones_like(ids)
  mask[1, 2, 12:] = 0
  mask[2, :, 17:] = 0
  return ids, types, mask


def _fresh(seed):
  return F.numpy_params(MODEL, CONFIG, seed)


def _torch(model, ids, types, mask):
  import torch
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long),
                 token_type_ids=torch.tensor(types, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()


def test_head_names_shapes_and_layouts():
  params = _fresh(0)
  assert params["classifier"]["kernel"].shape == (32, 1)
  assert "pooler" in params["bert"]
  ids, types, mask = _inputs()
  logits = np.asarray(_apply(params, ids, types, mask))
  assert logits.shape == (3, 4)
  # The loop's layout ([B, L, N]) gives the same logits.
  last = mc.BertForMultipleChoice(CONFIG, candidates_last=True)
  swapped = [np.swapaxes(x, 1, 2) for x in (ids, types, mask)]
  np.testing.assert_allclose(last.apply({"params": params}, *swapped), logits, atol=1e-6)
  # A padding candidate (no [CLS]) never wins.
  mask = mask.copy()
  mask[0, 3] = 0
  padded = np.asarray(_apply(params, ids, types, mask))
  assert padded[0, 3] < -1e8 and np.allclose(padded[0, :3], logits[0, :3], atol=1e-6)


def test_our_model_loads_in_transformers_with_the_same_logits(tmp_path):
  from transformers import AutoModelForMultipleChoice
  params = _fresh(1)
  params["classifier"]["bias"] = np.array([0.4], np.float32)
  directory = str(tmp_path / "mc")
  interop.save_hf(CONFIG, params, directory)
  path = os.path.join(directory, interop.CONFIG_NAME)
  with open(path) as f:
    hf = json.load(f)
  hf["architectures"] = [tasks.get("multiple_choice").hf_architecture]
  with open(path, "w") as f:
    json.dump(hf, f)
  model, info = AutoModelForMultipleChoice.from_pretrained(directory, output_loading_info=True)
  assert type(model).__name__ == "BertForMultipleChoice"
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids, types, mask = _inputs()
  diff = np.max(np.abs(_torch(model.eval(), ids, types, mask) - np.asarray(
      _apply(params, ids, types, mask))))
  print(f"ours -> transformers: max |logit diff| {diff:.2e}")
  assert diff <= 1e-4


def test_a_transformers_checkpoint_loads_with_its_head(tmp_path):
  import torch
  import transformers
  torch.manual_seed(0)
  theirs = transformers.BertForMultipleChoice(
      transformers.BertConfig(**interop.config_to_hf(CONFIG))).eval()
  directory = str(tmp_path / "hf_mc")
  theirs.save_pretrained(directory)
  _, params = interop.load_hf(directory)
  task = tasks.get("multiple_choice")
  head = task.head_from_hf(interop.read_state_dict(directory), 1, CONFIG.hidden_size)
  assert head is not None and set(head) == {"classifier"}
  params = {"bert": params["bert"], **head}
  ids, types, mask = _inputs(2)
  diff = np.max(np.abs(_torch(theirs, ids, types, mask) - np.asarray(
      _apply(params, ids, types, mask))))
  print(f"transformers -> ours: max |logit diff| {diff:.2e}")
  assert diff <= 1e-4
