"""Multiple choice end to end: a SWAG-layout task is learnt (full and LoRA), and the export
is transformers' BertForMultipleChoice with the same probabilities."""
import json

import numpy as np
import pytest

from bert_jax.finetune import loop as finetune
from tests.helpers import finetune as F
from tests.helpers.multiple_choice import write_swag


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return F.random_hf_dir(str(tmp_path_factory.mktemp("init")))


def swag_rows(n, seed):
  """The right ending holds a positive word, the three others a negative one."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(n):
    answer = int(rng.integers(4))
    endings = [" ".join(rng.choice(F.FILLER, 2)) + " " + str(rng.choice(
        F.POSITIVE if i == answer else F.NEGATIVE)) for i in range(4)]
    rows.append((" ".join(rng.choice(F.FILLER, 3)), " ".join(rng.choice(F.FILLER, 2)),
                 endings, answer))
  return rows


def _config(tmp_path, hf_dir, out, **kw):
  base = dict(task="multiple_choice", init_from=hf_dir, output_dir=str(tmp_path / out),
              max_seq_length=16, learning_rate=5e-3, num_epochs=4, batch_size=16,
              log_every_steps=1000, length_buckets=1)
  return finetune.FinetuneConfig(**{**base, **kw})


def test_multiple_choice_learns_and_exports(tmp_path, hf_dir):
  train = write_swag(tmp_path / "train.csv", swag_rows(192, 0))
  dev = write_swag(tmp_path / "val.csv", swag_rows(48, 1))
  results = F.run(_config(tmp_path, hf_dir, "full", train_file=train, eval_file=dev))
  assert results["eval_accuracy"] >= 0.9, results["history"]  # chance: 0.25
  preds = [json.loads(l) for l in (tmp_path / "full" / "eval_predictions.jsonl").read_text()
           .splitlines()]
  assert len(preds) == 48 and preds[0]["id"] == "100" and len(preds[0]["probabilities"]) == 4

  import torch
  from transformers import AutoModelForMultipleChoice, AutoTokenizer
  best = str(tmp_path / "full" / "best_model")
  model = AutoModelForMultipleChoice.from_pretrained(best).eval()
  assert model.config.architectures == ["BertForMultipleChoice"]
  tok = AutoTokenizer.from_pretrained(best)
  rows = swag_rows(48, 1)[:8]
  enc = tok([r[0] for r in rows for _ in range(4)], [f"{r[1]} {e}" for r in rows for e in r[2]],
            padding="max_length", max_length=16, truncation=True, return_tensors="pt")
  with torch.no_grad():
    probs = torch.softmax(model(**{k: v.view(8, 4, 16) for k, v in enc.items()}).logits, -1)
  np.testing.assert_allclose(probs.numpy(), [p["probabilities"] for p in preds[:8]], atol=1e-4)


def test_multiple_choice_with_lora(tmp_path, hf_dir):
  train = write_swag(tmp_path / "train.csv", swag_rows(64, 2))
  dev = write_swag(tmp_path / "val.csv", swag_rows(16, 3))
  results = F.run(_config(tmp_path, hf_dir, "lora", train_file=train, eval_file=dev,
                          num_epochs=1, lora_rank=4, learning_rate=1e-3))
  # Trained: rank-4 adapters on query and value of 2 layers (32 -> 4 -> 32) and the
  # fresh head (32 + 1); the checkpoint's pooler stays frozen.
  assert results["trainable_parameters"] == 2 * 2 * 4 * (32 + 32) + 33
  assert results["trainable_parameters"] < results["total_parameters"] / 10
  meta = F.read_json(tmp_path / "lora" / "best_model" / "finetune.json")
  assert meta["task"] == "multiple_choice" and meta["lora_merged"]
