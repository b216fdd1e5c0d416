"""Length-bucketed fine-tuning batches leave a fixed model's predictions and metrics as
they are (float noise aside), for sentence and token classification."""
import numpy as np
import pytest

from bert_jax import finetune
from bert_jax import interop
from bert_jax import partitioning
from bert_jax import tasks as tasks_lib
from data_pipeline import finetune_text
from tests.helpers import finetune as F

L = 16


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return F.make_hf_dir(str(tmp_path_factory.mktemp("init")))


@pytest.mark.parametrize("task_name", ["classification", "ner"])
def test_bucketed_predictions_and_metrics_match_full_width(tmp_path, hf_dir, task_name):
  if task_name == "ner":
    path = F.write_conll(tmp_path / "dev.conll", F.ner_sentences(40, 1))
  else:
    path = F.write_tsv(tmp_path / "dev.tsv", F.sentiment_rows(40, 1))
  cfg = finetune.FinetuneConfig(task=task_name, init_from=hf_dir,
                                output_dir=str(tmp_path / "out"), eval_file=str(path),
                                max_seq_length=L, length_buckets=2)
  task = tasks_lib.get(task_name)
  text = finetune_text.make_text_task(task_name, **cfg.text_options())
  bert_config, pretrained, _ = interop.load_hf_with_report(hf_dir)
  tokenizer = text.load_tokenizer(hf_dir)
  items = text.read(str(path), True)
  labels = text.label_list(items, None)
  data = text.encode(str(path), items, tokenizer, labels, L)
  mesh = partitioning.make_mesh((-1, 1, 1))
  # A fixed model: the checkpoint's encoder and a seeded random head, no training.
  setup = finetune.build(cfg, bert_config, {"bert": pretrained["bert"]}, len(labels), mesh, 1)
  lengths = data.arrays["attention_mask"].sum(1)
  assert (lengths <= L // 2).any() and (lengths > L // 2).any()  # both widths (8, 16) in use
  run = lambda buckets: finetune.predict_all(setup, setup.state.params, data, 8,
                                             per_token=task.per_token_outputs,
                                             length_buckets=buckets)
  full, bucketed = run(1), run(2)
  assert full.shape == bucketed.shape
  if task.per_token_outputs:
    real = data.arrays["attention_mask"] > 0
    np.testing.assert_array_equal(bucketed[real], full[real])
  else:
    np.testing.assert_allclose(bucketed, full, atol=1e-5)
    assert not np.allclose(full, full[::-1])  # outputs differ per example: order matters
  metrics = {}
  for name, outputs in (("full", full), ("bucketed", bucketed)):
    metrics[name], _ = task.score(text.references(data), text.decode(data, outputs, labels),
                                  labels)
  assert metrics["bucketed"] == pytest.approx(metrics["full"], abs=1e-6)
