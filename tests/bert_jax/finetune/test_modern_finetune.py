"""Fine-tuning on the modern encoder: the task modules unchanged, the export a transformers
ModernBertForSequenceClassification that predicts what we predicted."""
import json
import os

import jax
import numpy as np

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax.finetune import loop as finetune
from tests.helpers import finetune as F


def _modern_hf_dir(directory):
  vocab = F.SPECIALS + F.WORDS
  config = model_lib.modern_config(
      "modernbert-tiny", vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3,
      num_attention_heads=2, intermediate_size=48, max_position_embeddings=64,
      sliding_window=8, vocab_multiple=1)
  params = model_lib.BertForPreTraining(config).init(
      jax.random.PRNGKey(0), **model_lib.dummy_inputs(config))["params"]
  interop.save_hf(config, jax.tree.map(np.asarray, model_lib.nn.unbox(params)), directory)
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(vocab) + "\n")
  return directory


def test_classification_on_the_modern_encoder_learns_and_exports(tmp_path):
  hf_dir = _modern_hf_dir(str(tmp_path / "init"))
  train = F.write_tsv(tmp_path / "train.tsv", F.sentiment_rows(256, 0))
  dev = F.write_tsv(tmp_path / "dev.tsv", F.sentiment_rows(64, 1))
  cfg = finetune.FinetuneConfig(
      task="classification", init_from=hf_dir, output_dir=str(tmp_path / "out"),
      max_seq_length=16, learning_rate=5e-3, num_epochs=6, log_every_steps=1000,
      train_file=str(train), eval_file=str(dev), predict_file=str(dev), length_buckets=1)
  results = F.run(cfg)
  assert results["eval_accuracy"] >= 0.9, results["history"]  # chance: 0.5

  import torch
  import transformers
  best = tmp_path / "out" / "best_model"
  hf = json.loads((best / "config.json").read_text())
  assert hf["architectures"] == ["ModernBertForSequenceClassification"]
  hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(best).eval()
  assert type(hf_model).__name__ == "ModernBertForSequenceClassification"
  tok = transformers.BertTokenizerFast.from_pretrained(best)
  preds = [json.loads(l) for l in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
  enc = tok([p["text"] for p in preds[:16]], padding="max_length", max_length=16,
            return_tensors="pt")
  with torch.no_grad():
    logits = hf_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
  probs = torch.softmax(logits, -1).numpy()
  ours = np.array([[p["probabilities"]["neg"], p["probabilities"]["pos"]] for p in preds[:16]])
  np.testing.assert_allclose(probs, ours, atol=1e-4)
