"""The QA text side on a Chinese (CMRC 2018 layout) file: windows, decoding, files, scoring."""
import json

import numpy as np

from bert_jax import batch as batch_lib
from bert_jax.finetune import tasks
from bert_jax.finetune.config import FinetuneConfig
from data_pipeline.finetune import tasks as text_tasks
from data_pipeline.finetune.tasks import question_answering as qa_text
from data_pipeline.text.tokenizer import SPECIAL_TOKENS, load_tokenizer

CHARS = list("北京是中国的首都台湾大学在台北哪里？。，")


def test_chinese_file_windows_decodes_writes_and_scores_the_cmrc_way(tmp_path):
  (tmp_path / "vocab.txt").write_text("\n".join(list(SPECIAL_TOKENS) + CHARS) + "\n")
  tokenizer = load_tokenizer(str(tmp_path / "vocab.txt"))
  context = "北京是中国的首都。台湾大学在台北。"
  data = {"version": "v2.0", "data": [{"paragraphs": [{"id": "DEV_0", "context": context, "qas": [
      {"id": "DEV_0_QUERY_0", "question": "中国的首都在哪里？",
       "answers": [{"text": "北京", "answer_start": 0}]},
      {"id": "DEV_0_QUERY_1", "question": "台湾大学在哪里？",
       "answers": [{"text": "台北", "answer_start": 14}]},
      {"id": "DEV_0_QUERY_2", "question": "首都大学在哪里？", "answers": [],
       "is_impossible": True}]}]}]}
  path = tmp_path / "cmrc.json"
  path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
  options = FinetuneConfig(task="qa", version_2_with_negative=True, doc_stride=4,
                           max_query_length=6).text_options()
  text = text_tasks.make_text_task("qa", **options)
  assert isinstance(text, qa_text.QuestionAnsweringText)
  encoded = text.encode(str(path), text.read(str(path), True), tokenizer, [], 20)
  assert len(encoded) == 3 and len(encoded.arrays["input_ids"]) > 3  # several windows each
  assert set(encoded.arrays) == set(batch_lib.QA_KEYS)
  refs = text.references(encoded)
  assert refs.metric == "cmrc" and refs.golds["DEV_0_QUERY_2"] == []

  # Logits that point at each window's labels: the gold answers come back, cut
  # from the context by character offsets; [CLS] everywhere means "no answer".
  n, length = encoded.arrays["input_ids"].shape
  start, end = np.zeros((n, length), np.float32), np.zeros((n, length), np.float32)
  rows = np.arange(n)
  start[rows, encoded.arrays["start_positions"]] = 8.0
  end[rows, encoded.arrays["end_positions"]] = 8.0
  predictions = text.decode(encoded, {"start_logits": start, "end_logits": end}, [])
  assert predictions.predictions == {"DEV_0_QUERY_0": "北京", "DEV_0_QUERY_1": "台北",
                                     "DEV_0_QUERY_2": ""}
  written = text.write_predictions(str(tmp_path / "eval_predictions"), encoded, predictions, [])
  assert written.endswith("eval_predictions.json")
  assert json.loads((tmp_path / "eval_predictions.json").read_text("utf-8"))["DEV_0_QUERY_0"] \
      == "北京"
  assert "北京" in (tmp_path / "eval_predictions.json").read_text("utf-8")  # not \u escapes
  assert set(json.loads((tmp_path / "eval_null_odds.json").read_text())) == set(refs.golds)
  assert (tmp_path / "eval_nbest_predictions.json").exists()

  metrics, table = tasks.get("qa").score(refs, predictions, [])
  assert metrics["exact"] == 100.0 and metrics["f1"] == 100.0 and "average" in metrics
  assert "exact" in table
  assert qa_text.auto_metric([context]) == "cmrc"
  assert qa_text.auto_metric(["Paris is 北"]) == "squad"


def test_auto_metric_counts_kana_as_cjk():
  # Japanese: mostly kana, no spaces; scored per ideograph (CMRC), not as one SQuAD token.
  japanese = "きょうはとてもいいてんきですね。あしたはあめがふるでしょう。東京"
  assert qa_text.auto_metric([japanese]) == "cmrc"
  assert qa_text.auto_metric(["東京 is the capital of Japan, and Kyoto was."]) == "squad"
