"""Length-bucketed fine-tuning batches leave a fixed model's predictions and metrics as
they are (float noise aside), for sentence and token classification."""
import numpy as np
import pytest

from bert_jax import finetune
from bert_jax import interop
from bert_jax import partitioning
from data_pipeline import tokenizers as tokenizers_lib
from tests import finetune_fixtures as F

L = 16


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return F.make_hf_dir(str(tmp_path_factory.mktemp("init")))


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_bucketed_predictions_and_metrics_match_full_width(tmp_path, hf_dir, task):
  if task == "ner":
    path = F.write_conll(tmp_path / "dev.conll", F.ner_sentences(40, 1))
  else:
    path = F.write_tsv(tmp_path / "dev.tsv", F.sentiment_rows(40, 1))
  cfg = finetune.FinetuneConfig(task=task, init_from=hf_dir, output_dir=str(tmp_path / "out"),
                                eval_file=str(path), max_seq_length=L, length_buckets=2)
  bert_config, pretrained, _ = interop.load_hf_with_report(hf_dir)
  tokenizer = tokenizers_lib.load_tokenizer(hf_dir)
  items = finetune._read(cfg, str(path), True)
  labels = finetune._label_list(cfg, items, None)
  data = finetune._encode(cfg, str(path), items, tokenizer, labels)
  mesh = partitioning.make_mesh((-1, 1, 1))
  # A fixed model: the checkpoint's encoder and a seeded random head, no training.
  setup = finetune.build(cfg, bert_config, {"bert": pretrained["bert"]}, len(labels), mesh, 1)
  full = finetune.predict_all(setup, setup.state.params, data, 8, task, length_buckets=1)
  bucketed = finetune.predict_all(setup, setup.state.params, data, 8, task, length_buckets=2)
  lengths = data.arrays["attention_mask"].sum(1)
  assert (lengths <= L // 2).any() and (lengths > L // 2).any()  # both widths (8, 16) in use
  assert full.shape == bucketed.shape
  if task == "ner":
    np.testing.assert_array_equal(bucketed * data.arrays["attention_mask"],
                                  full * data.arrays["attention_mask"])
  else:
    np.testing.assert_allclose(bucketed, full, atol=1e-5)
    assert not np.allclose(full, full[::-1])  # outputs differ per example: order matters
  metrics_full, _ = finetune.score(task, data, full, labels)
  metrics_bucketed, _ = finetune.score(task, data, bucketed, labels)
  assert metrics_bucketed == pytest.approx(metrics_full, abs=1e-6)
