"""Length-bucketed fine-tuning batches leave a fixed model's predictions and metrics as
they are (float noise aside), for sentence and token classification and for question
answering (its n-best lists, null odds and answers included)."""
import jax
import numpy as np
import pytest

from bert_jax.finetune import bucketing
from bert_jax.finetune import loop as finetune
from bert_jax import interop
from bert_jax import partitioning
from bert_jax.finetune import tasks as tasks_lib
from data_pipeline.finetune import tasks as text_tasks
from tests.helpers import finetune as F
from tests.helpers import qa as Q

L = 16


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return F.make_hf_dir(str(tmp_path_factory.mktemp("init")))


@pytest.mark.parametrize("task_name", ["classification", "ner", "qa"])
def test_bucketed_predictions_and_metrics_match_full_width(tmp_path, hf_dir, task_name):
  qa_options = {}
  if task_name == "ner":
    path = F.write_conll(tmp_path / "dev.conll", F.ner_sentences(40, 1))
  elif task_name == "qa":
    # Contexts of 16-37 words at 32 with stride 8: long contexts span several windows
    # (the max-context rule picks among them), short ones fit one shorter window.
    path = Q.write_squad(tmp_path / "dev.json", Q.qa_paragraphs(24, 1, unanswerable=0.25))
    qa_options = dict(version_2_with_negative=True, doc_stride=8, max_query_length=4)
  else:
    path = F.write_tsv(tmp_path / "dev.tsv", F.sentiment_rows(40, 1))
  cfg = finetune.FinetuneConfig(task=task_name, init_from=hf_dir,
                                output_dir=str(tmp_path / "out"), eval_file=str(path),
                                max_seq_length=2 * L if qa_options else L, length_buckets=2,
                                **qa_options)
  task = tasks_lib.get(task_name)
  text = text_tasks.make_text_task(task_name, **cfg.text_options())
  bert_config, pretrained, _ = interop.load_hf_with_report(hf_dir)
  tokenizer = text.load_tokenizer(hf_dir)
  items = text.read(str(path), True)
  labels = text.label_list(items, None)
  data = text.encode(str(path), items, tokenizer, labels, cfg.max_seq_length)
  mesh = partitioning.make_mesh((-1, 1, 1))
  # A fixed model: the checkpoint's encoder and a seeded random head, no training.
  setup = finetune.build(cfg, bert_config, {"bert": pretrained["bert"]}, max(len(labels), 1), mesh,
                         1)
  # Two widths fitted to the lengths, both in use.
  widths = finetune._widths(data.arrays, 2)  # pylint: disable=protected-access
  used = bucketing.assign(bucketing.lengths_of(data.arrays["attention_mask"]), widths)
  assert len(widths) == 2 and set(used.tolist()) == {0, 1}, widths
  run = lambda buckets: finetune.predict_all(setup, setup.state.params, data, 8,
                                             per_token=task.per_token_outputs,
                                             length_buckets=buckets)
  full, bucketed = run(1), run(2)
  assert jax.tree.map(np.shape, full) == jax.tree.map(np.shape, bucketed)
  if task_name == "qa":
    real = data.arrays["attention_mask"] > 0
    for key in ("start_logits", "end_logits"):
      np.testing.assert_allclose(bucketed[key][real], full[key][real], atol=1e-5)
  elif task.per_token_outputs:
    real = data.arrays["attention_mask"] > 0
    np.testing.assert_array_equal(bucketed[real], full[real])
  else:
    np.testing.assert_allclose(bucketed, full, atol=1e-5)
    assert not np.allclose(full, full[::-1])  # outputs differ per example: order matters
  metrics, decoded = {}, {}
  for name, outputs in (("full", full), ("bucketed", bucketed)):
    decoded[name] = text.decode(data, outputs, labels)
    metrics[name], _ = task.score(text.references(data), decoded[name], labels)
  assert metrics["bucketed"] == pytest.approx(metrics["full"], abs=1e-6)
  if task_name == "qa":
    full, bucketed = decoded["full"], decoded["bucketed"]
    assert bucketed.predictions == full.predictions
    assert bucketed.best_non_null == full.best_non_null
    assert bucketed.null_odds == pytest.approx(full.null_odds, abs=1e-4)
    assert set(bucketed.nbest) == set(full.nbest) == {e.id for e in data.items}
    # The same n-best lists: equal scores rank by rank, the same text wherever the score
    # is not tied (within float noise) with a neighbour's, since ties may swap.
    score = lambda e: e["start_logit"] + e["end_logit"]
    for qid, entries in full.nbest.items():
      ours = bucketed.nbest[qid]
      assert len(ours) == len(entries), qid
      scores = [score(e) for e in entries]
      np.testing.assert_allclose([score(e) for e in ours], scores, atol=1e-4)
      np.testing.assert_allclose([e["probability"] for e in ours],
                                 [e["probability"] for e in entries], atol=1e-5)
      for i, (a, b) in enumerate(zip(ours, entries)):
        tied = any(abs(scores[i] - scores[j]) < 1e-4 for j in (i - 1, i + 1)
                   if 0 <= j < len(scores))
        assert tied or a["text"] == b["text"], (qid, i, a, b)
    assert any(len(entries) > 1 for entries in full.nbest.values())
