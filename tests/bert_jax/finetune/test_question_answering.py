"""Question answering end to end: a tiny BERT learns a synthetic SQuAD v2.0 task,
writes the official prediction files, exports a transformers QA model that then
answers new questions without training; LoRA trains adapters and the QA head only."""
import json

import jax
import numpy as np
import pytest

from bert_jax.finetune import loop as finetune
from bert_jax import interop
from bert_jax import partitioning
from bert_jax import tree as tree_lib
from data_pipeline.finetune import tasks as text_tasks
from tests.helpers import finetune as F
from tests.helpers import qa as Q


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return F.random_hf_dir(str(tmp_path_factory.mktemp("init")))


def _config(tmp_path, hf_dir, **kw):
  base = dict(task="qa", init_from=hf_dir, output_dir=str(tmp_path / "out"),
              version_2_with_negative=True, max_seq_length=32, doc_stride=16,
              max_query_length=8, learning_rate=5e-3, num_epochs=3, log_every_steps=1000,
              eval_batch_size=32,
              length_buckets=1)  # one width: not a bucket test (test_buckets.py is)
  return finetune.FinetuneConfig(**{**base, **kw})


def test_qa_learns_writes_official_files_exports_and_predicts(tmp_path, hf_dir):
  train = Q.write_squad(tmp_path / "train.json", Q.qa_paragraphs(256, 0, unanswerable=0.2))
  dev_paragraphs = Q.qa_paragraphs(64, 1, unanswerable=0.2)
  dev = Q.write_squad(tmp_path / "dev.json", dev_paragraphs)
  # Unlabelled questions, JSONL.
  questions = [{"id": qa["id"], "question": qa["question"], "context": p["context"]}
               for p in dev_paragraphs[:16] for qa in p["qas"]]
  plain = tmp_path / "questions.jsonl"
  plain.write_text("\n".join(json.dumps(q) for q in questions) + "\n")

  cfg = _config(tmp_path, hf_dir, train_file=train, eval_file=dev, predict_file=str(plain))
  results = F.run(cfg)
  out = tmp_path / "out"
  # Always answering "" scores 20 (the unanswerable share); a random span ~0.
  assert results["eval_exact"] >= 80 and results["eval_f1"] >= 85, results["history"]
  assert results["eval_HasAns_total"] + results["eval_NoAns_total"] == 64
  assert results["eval_best_f1"] >= results["eval_f1"] - 1e-9
  assert "eval_best_f1_thresh" in results
  # 256 questions, many contexts in two windows: the steps count windows, not questions.
  text = text_tasks.make_text_task("qa", **cfg.text_options())
  windows = len(text.encode(train, text.read(train, True), _tokenizer(hf_dir), [],
                            32).arrays["input_ids"])
  assert results["train_steps"] == 3 * -(-windows // 32) and windows > 256

  # The official files: {id: text}; n-best lists; null odds (v2.0).
  eval_preds = F.read_json(out / "eval_predictions.json")
  assert set(eval_preds) == {p["qas"][0]["id"] for p in dev_paragraphs}
  nbest = F.read_json(out / "eval_nbest_predictions.json")
  odds = F.read_json(out / "eval_null_odds.json")
  for qid, text in eval_preds.items():
    assert all(set(e) == {"text", "probability", "start_logit", "end_logit"} for e in nbest[qid])
    best_span = next(e["text"] for e in nbest[qid] if e["text"])
    assert text == ("" if odds[qid] > 0.0 else best_span)
  report = (out / "eval_report.txt").read_text()
  assert "best_f1_thresh" in report
  predictions = F.read_json(out / "predictions.json")
  assert predictions == {q["id"]: eval_preds[q["id"]] for q in questions}
  assert (out / "nbest_predictions.json").exists() and (out / "null_odds.json").exists()

  # best_model is a transformers BertForQuestionAnswering, and answers again
  # without training (its qa_outputs head loads back).
  from transformers import AutoModelForQuestionAnswering
  best = str(out / "best_model")
  model, info = AutoModelForQuestionAnswering.from_pretrained(best, output_loading_info=True)
  assert type(model).__name__ == "BertForQuestionAnswering"
  assert not info["missing_keys"] and not info["unexpected_keys"]
  meta = F.read_json(out / "best_model" / "finetune.json")
  assert meta["task"] == "qa" and meta["doc_stride"] == 16
  # As transformers saves a QA model: without id2label (the head loads all the same).
  config = F.read_json(out / "best_model" / "config.json")
  del config["id2label"], config["label2id"]
  (out / "best_model" / "config.json").write_text(json.dumps(config))
  again = F.run(_config(tmp_path, best, output_dir=str(tmp_path / "again"),
                        predict_file=str(plain)))
  assert again["train_steps"] == 0
  assert F.read_json(tmp_path / "again" / "predictions.json") == predictions


def _tokenizer(directory):
  from data_pipeline.text import tokenizer as tokenizers
  return tokenizers.load_tokenizer(directory)


def test_qa_with_lora_trains_adapters_and_head_only(tmp_path, hf_dir):
  cfg = _config(tmp_path, hf_dir, lora_rank=4, lora_alpha=8.0, train_file="unused",
                eval_file="unused")
  bert_config, pretrained = interop.load_hf(hf_dir)
  mesh = partitioning.make_mesh(cfg.mesh_shape)
  setup = finetune.build(cfg, bert_config, {"bert": pretrained["bert"]}, 1, mesh, 4)
  assert set(setup.state.params["model"]) == {"qa_outputs"}
  text = text_tasks.make_text_task("qa", **cfg.text_options())
  path = Q.write_squad(tmp_path / "t.json", Q.qa_paragraphs(40, 0, unanswerable=0.2))
  encoded = text.encode(path, text.read(path, True), _tokenizer(hf_dir), [], 32)
  batch = {k: v[:32] for k, v in encoded.arrays.items()}
  frozen_before = jax.tree.map(lambda x: np.array(x, copy=True), setup.frozen)
  state = setup.state
  for _ in range(3):
    state, metrics = setup.train(state, setup.frozen, partitioning.host_to_device(batch, mesh))
  assert np.isfinite(float(metrics["loss"]))
  for path_, before in tree_lib.flatten(frozen_before).items():
    np.testing.assert_array_equal(before, np.asarray(tree_lib.flatten(setup.frozen)[path_]))
  assert float(metrics["grad_norm"]) > 0 and "lora" in state.params
