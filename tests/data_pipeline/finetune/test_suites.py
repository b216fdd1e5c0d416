"""GLUE and CLUE layouts: every task's files as distributed parse (quirks included), bad
input is one message naming the file and what was expected, submission files are in the
leaderboards' formats. No training here (tests/bert_jax/finetune/test_suite.py runs some)."""
import json
import os

import pytest

from data_pipeline.finetune import suites
from data_pipeline.finetune.suites import base
from data_pipeline.finetune.suites import clue
from tests.helpers import suites as S


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
  root = tmp_path_factory.mktemp("suites")
  S.write_glue(str(root / "glue"))
  S.write_clue(str(root / "clue"))
  return root


def _prepare(suite, root, name, tmp_path):
  layout = suites.get(suite).get(name)
  return layout, layout.prepare(layout, layout.find(str(root / suite)), str(tmp_path / name))


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(l) for l in f if l.strip()]


@pytest.mark.parametrize("name,kind,labels,pair", [
    ("CoLA", "classification", ("0", "1"), False), ("SST-2", "classification", ("0", "1"), False),
    ("MRPC", "classification", ("0", "1"), True), ("STS-B", "regression", None, True),
    ("QQP", "classification", ("0", "1"), True),
    ("MNLI", "classification", ("contradiction", "entailment", "neutral"), True),
    ("QNLI", "classification", ("entailment", "not_entailment"), True),
    ("RTE", "classification", ("entailment", "not_entailment"), True),
    ("WNLI", "classification", ("0", "1"), True)])
def test_every_glue_task_parses(roots, tmp_path, name, kind, labels, pair):
  _, p = _prepare("glue", roots, name, tmp_path)
  assert (p.kind, p.labels) == (kind, labels)
  train, dev = _lines(p.train), _lines(p.dev)
  assert len(train) == 16 and len(dev) == 8  # QQP: its malformed 17th row skipped
  assert ("text_pair" in train[0]) == pair and p.options["text_pair_column"] == (
      "text_pair" if pair else None)
  assert len(_lines(p.test)) == 4 and p.test_ids == ["0", "1", "2", "3"]
  assert all("label" not in r for r in _lines(p.test))


def test_glue_quirks(roots, tmp_path):
  # CoLA's train has no header: its first line is an example.
  _, cola = _prepare("glue", roots, "CoLA", tmp_path)
  first = open(roots / "glue" / "CoLA" / "train.tsv").readline().rstrip("\n").split("\t")
  assert _lines(cola.train)[0] == {"text": first[3], "label": first[1]}
  assert cola.options["metric_for_best"] == "mcc"  # each run's best epoch by the leaderboard's
  _, qqp = _prepare("glue", roots, "QQP", tmp_path)
  assert qqp.notes == ["train.tsv: 1 malformed row(s) skipped"]
  assert qqp.options["metric_for_best"] == "f1"
  _, stsb = _prepare("glue", roots, "STS-B", tmp_path)
  assert isinstance(float(_lines(stsb.train)[0]["label"]), float)
  _, mnli = _prepare("glue", roots, "MNLI", tmp_path)
  assert [e.name for e in mnli.extras] == ["mm", "ax"]
  assert len(_lines(mnli.extras[0].eval_file)) == 8 and mnli.extra_ids["ax"] == ["0", "1", "2"]
  _, mrpc = _prepare("glue", roots, "MRPC", tmp_path)
  row = open(roots / "glue" / "MRPC" / "train.tsv").read().splitlines()[1].split("\t")
  assert _lines(mrpc.train)[0] == {"text": row[3], "text_pair": row[4], "label": row[0]}


def test_every_clue_task_parses_in_chinese(roots, tmp_path):
  expected = {"AFQMC": ("classification", ("0", "1")), "TNEWS": ("classification", ("101", "103")),
              "IFLYTEK": ("classification", ("0", "11")),
              "CMNLI": ("classification", ("contradiction", "entailment", "neutral")),
              "OCNLI": ("classification", ("contradiction", "entailment", "neutral")),
              "CLUEWSC2020": ("classification", ("false", "true")),
              "CSL": ("classification", ("0", "1")), "CMRC2018": ("qa", None),
              "CHID": ("multiple_choice", None), "C3": ("multiple_choice", None)}
  for name, (kind, labels) in expected.items():
    _, p = _prepare("clue", roots, name, tmp_path)
    assert (p.kind, p.labels) == (kind, labels), name
    assert p.test is not None and p.test_ids, name
  _, ocnli = _prepare("clue", roots, "OCNLI", tmp_path)
  assert len(_lines(ocnli.train)) == 16 and ocnli.notes == [
      "train.json: 1 row(s) labelled '-' dropped"]
  _, wsc = _prepare("clue", roots, "CLUEWSC2020", tmp_path)
  assert _lines(wsc.train)[0]["text"].startswith("_小明_") and "[他]很高兴" in _lines(
      wsc.train)[0]["text"]
  _, csl = _prepare("clue", roots, "CSL", tmp_path)
  assert _lines(csl.train)[0]["text"] == "北京；学校"
  _, c3 = _prepare("clue", roots, "C3", tmp_path)
  assert len(json.load(open(c3.train))) == 2  # d-train.json + m-train.json
  assert c3.test_ids == [0, 1]  # the file's ids, as the submission keys them
  _, chid = _prepare("clue", roots, "CHID", tmp_path)
  assert chid.test_ids == ["#idiom003001#", "#idiom003002#"]
  _, cmrc = _prepare("clue", roots, "CMRC2018", tmp_path)
  assert cmrc.test_ids == ["TEST_0_QUERY_0", "TEST_0_QUERY_1"] and cmrc.options == {
      "qa_metric": "cmrc", "metric_for_best": "exact"}


def test_cluener_spans_to_bio_and_back(roots, tmp_path):
  _, p = _prepare("clue", roots, "CLUENER", tmp_path)
  first = _lines(p.train)[0]
  assert first["tokens"] == list("叶老桂在北京工作。")
  assert first["tags"] == ["B-name", "I-name", "I-name", "O", "B-address", "I-address", "O",
                           "O", "O"]
  assert _lines(p.train)[2]["tokens"][2] == " "  # a space is a character of the text too
  for text, label in S.CLUENER_TEXT:
    assert clue.entity_spans(text, clue.bio_tags(text, label, "x", 1)) == label
  assert p.labels[0] == "O" and "B-company" in p.labels and p.test_ids == [0, 1, 2]


def test_bad_input_is_one_message_naming_what_was_expected(roots, tmp_path):
  glue, clue_suite = suites.get("glue"), suites.get("clue")
  with pytest.raises(base.SuiteError, match=r"QNLI: no folder QNLI in .*nowhere"):
    glue.get("QNLI").find(str(tmp_path / "nowhere"))
  # Another layout: the error names the expected columns.
  bad = tmp_path / "bad"
  S.write_glue(str(bad), sizes=(4, 4, 2))
  (bad / "SST-2" / "train.tsv").write_text("text\tlabel\ngood\t1\n")
  layout = glue.get("SST-2")
  with pytest.raises(base.SuiteError, match=r"SST-2/train.tsv:1: not this task's layout: no "
                     r"column\(s\) \['sentence'\]; expected the columns sentence, label"):
    layout.prepare(layout, layout.find(str(bad)), str(tmp_path / "w"))
  (bad / "CoLA" / "train.tsv").write_text("source\tlabel\tmark\tsentence\nx\t1\t\tgood\n")
  layout = glue.get("CoLA")
  with pytest.raises(base.SuiteError, match="CoLA's train / dev files have no header"):
    layout.prepare(layout, layout.find(str(bad)), str(tmp_path / "w"))
  # Dev labels not in train.
  rte = (bad / "RTE" / "dev.tsv").read_text().replace("not_entailment", "maybe")
  (bad / "RTE" / "dev.tsv").write_text(rte)
  layout = glue.get("RTE")
  with pytest.raises(base.SuiteError, match=r"RTE/dev.tsv: label\(s\) \['maybe'\] do not occur"):
    layout.prepare(layout, layout.find(str(bad)), str(tmp_path / "w"))
  # A test file without ids.
  S.write_clue(str(bad / "clue"), sizes=(4, 4, 2))
  test = bad / "clue" / "afqmc_public" / "test.json"
  test.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "id"},
                                     ensure_ascii=False) + "\n" for r in _lines(test)))
  layout = clue_suite.get("AFQMC")
  with pytest.raises(base.SuiteError, match=r"test.json:1: test example without an id"):
    layout.prepare(layout, layout.find(str(bad / "clue")), str(tmp_path / "w"))


def _predictions(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  return str(path)


def test_submission_files_in_the_leaderboards_formats(roots, tmp_path):
  out = tmp_path / "submission"
  out.mkdir()
  layout, mnli = _prepare("glue", roots, "MNLI", tmp_path)
  preds = {s: _predictions(tmp_path / f"{s}.jsonl", [{"prediction": "neutral"}] * n)
           for s, n in (("test", 4), ("mm", 4), ("ax", 3))}
  files = layout.submission(layout, mnli, preds, str(out))
  assert [os.path.basename(f) for f in files] == ["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"]
  assert (out / "AX.tsv").read_text() == "index\tprediction\n0\tneutral\n1\tneutral\n2\tneutral\n"
  layout, stsb = _prepare("glue", roots, "STS-B", tmp_path)
  layout.submission(layout, stsb, {"test": _predictions(tmp_path / "s.jsonl", [
      {"prediction": v} for v in (5.7, -0.2, 2.5, 1.0)])}, str(out))
  assert (out / "STS-B.tsv").read_text().splitlines()[1:] == ["0\t5.000", "1\t0.000", "2\t2.500",
                                                              "3\t1.000"]
  layout, tnews = _prepare("clue", roots, "TNEWS", tmp_path)
  layout.submission(layout, tnews, {"test": _predictions(tmp_path / "t.jsonl", [
      {"prediction": "101"}] * 4)}, str(out))
  assert _lines(out / "tnews11_predict.json")[0] == {"id": 0, "label": "101"}
  layout, chid = _prepare("clue", roots, "CHID", tmp_path)
  layout.submission(layout, chid, {"test": _predictions(tmp_path / "c.jsonl", [
      {"id": "#idiom003001#", "prediction": 2}, {"id": "#idiom003002#", "prediction": 0}])},
                    str(out))
  assert json.load(open(out / "chid11_predict.json")) == {"#idiom003001#": 2, "#idiom003002#": 0}
  layout, c3 = _prepare("clue", roots, "C3", tmp_path)
  layout.submission(layout, c3, {"test": _predictions(tmp_path / "c3.jsonl", [
      {"id": "0", "prediction": 1}, {"id": "1", "prediction": 0}])}, str(out))
  assert _lines(out / "c311_predict.json") == [{"id": 0, "label": 1}, {"id": 1, "label": 0}]
  layout, cmrc = _prepare("clue", roots, "CMRC2018", tmp_path)
  answers = tmp_path / "answers.json"
  answers.write_text(json.dumps({"TEST_0_QUERY_0": "北京", "TEST_0_QUERY_1": "每天早上"}))
  layout.submission(layout, cmrc, {"test": str(answers)}, str(out))
  assert json.load(open(out / "cmrc2018_predict.json"))["TEST_0_QUERY_1"] == "每天早上"
  layout, ner = _prepare("clue", roots, "CLUENER", tmp_path)
  conll = tmp_path / "ner.conll"
  conll.write_text("".join("".join(f"{c} {t}\n" for c, t in zip(
      text, clue.bio_tags(text, label, "x", 1))) + "\n" for text, label in S.CLUENER_TEXT))
  layout.submission(layout, ner, {"test": str(conll)}, str(out))
  assert [r["label"] for r in _lines(out / "cluener_predict.json")] == [
      label for _, label in S.CLUENER_TEXT]
