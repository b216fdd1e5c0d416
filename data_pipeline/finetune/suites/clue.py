"""CLUE as it is distributed: one folder per task (`afqmc_public/` or `afqmc/`, ...).

  AFQMC, CMNLI, OCNLI  JSON lines sentence1, sentence2, label (CMNLI / OCNLI: rows whose label
                       is "-", no annotator majority, are dropped as the baselines do)
  TNEWS                sentence, label (the class code, e.g. "102"), label_desc, keywords
  IFLYTEK              sentence, label, label_des
  CLUEWSC2020          text, target {span1_index, span1_text, span2_index, span2_text},
                       label true / false; the spans are marked in the text (the noun
                       phrase between "_", the pronoun in "[...]") as CLUE's baseline does
  CSL                  abst, keyword (a list), label; the pair is ("；".join(keyword), abst)
  CMRC2018             SQuAD-style JSON (train.json, dev.json, test.json): the QA task,
                       scored by CMRC 2018's official EM / F1
  CLUENER              JSON lines text, label {type: {entity: [[start, end]]}}: characters as
                       tokens, tags BIO; entity F1
  C3                   d-train.json + m-train.json, d-dev.json + m-dev.json, test1.1.json
                       (multiple choice, see data_pipeline/finetune/tasks/multiple_choice.py)
  CHID                 train.json + train_answer.json, dev.json + dev_answer.json,
                       test1.1.json (multiple choice, one example per #idiom# blank)
The test files have an `id` per example (C3: per question; CHID: the blank's tag).

Leaderboard (cluebenchmarks.com, CLUE 1.1): accuracy for the classification tasks, C3 and
CHID, EM for CMRC 2018 (F1 shown beside); the CLUE score is the unweighted mean of the nine
tasks' scores: AFQMC, TNEWS, IFLYTEK, OCNLI, CLUEWSC2020, CSL, CMRC2018, CHID, C3. CMNLI (a
CLUE 1.0 task) and CLUENER (its own leaderboard, entity F1) are reported, not averaged.

Submission (CLUE's submission guide): `<task>_predict.json` per task, CLUE 1.1's names:
afqmc_predict.json, tnews11_predict.json, iflytek_predict.json, cmnli_predict.json,
ocnli_50k_predict.json, cluewsc11_predict.json, csl_predict.json: JSON lines
{"id": ..., "label": "..."} in the test file's order; cmrc2018_predict.json: one JSON object
{question id: answer}; c311_predict.json: JSON lines {"id", "label": candidate index};
chid11_predict.json: one JSON object {"#idiom...#": candidate index}; cluener_predict.json:
JSON lines {"id", "label": {type: {entity: [[start, end]]}}}.
"""
from __future__ import annotations

import functools
import json
import logging
import os

from data_pipeline.fileio import write_text_atomic
from data_pipeline.finetune import readers as fd
from data_pipeline.finetune import squad as squad_data
from data_pipeline.finetune.suites import base
from data_pipeline.finetune.suites.base import Column, Prepared, SuiteError
from data_pipeline.finetune.tasks import multiple_choice as mc_text

FILES = (("train.json",), ("dev.json",), ("test1.1.json", "test.json", "test1.0.json"))


def _folders(name: str) -> tuple[str, ...]:
  return (f"{name}_public", name, name.upper())


# ----------------------------------------------------------------------------- classification


def _wsc_text(row: dict, path: str) -> str:
  """The text with span1 between "_" and span2 in "[...]" (CLUE's WSC baseline marking)."""
  text, target = row["text"], row["target"]
  spans = []
  for k, (left, right) in (("1", ("_", "_")), ("2", ("[", "]"))):
    span, start = target.get(f"span{k}_text"), target.get(f"span{k}_index")
    if span is None or start is None:
      raise SuiteError(f"{path}:{row['_line']}: target has no span{k}_text / span{k}_index")
    if text[start:start + len(span)] != span:  # a few rows' indices are off: find the text
      start = text.find(span)
      if start < 0:
        raise SuiteError(f"{path}:{row['_line']}: span{k}_text {span!r} is not in the text")
    spans.append((start, start + len(span), left, right))
  for start, end, left, right in sorted(spans, reverse=True):
    text = text[:start] + left + text[start:end] + right + text[end:]
  return text


_CLASSIFICATION = {
    # name: (keys, text, pair)
    "AFQMC": (("sentence1", "sentence2"), lambda r, p: r["sentence1"], lambda r, p: r["sentence2"]),
    "TNEWS": (("sentence",), lambda r, p: r["sentence"], None),
    "IFLYTEK": (("sentence",), lambda r, p: r["sentence"], None),
    "CMNLI": (("sentence1", "sentence2"), lambda r, p: r["sentence1"], lambda r, p: r["sentence2"]),
    "OCNLI": (("sentence1", "sentence2"), lambda r, p: r["sentence1"], lambda r, p: r["sentence2"]),
    "CLUEWSC2020": (("text", "target"), _wsc_text, None),
    "CSL": (("abst", "keyword"), lambda r, p: "；".join(r["keyword"]), lambda r, p: r["abst"]),
}


def _label(row: dict) -> str:
  value = row["label"]
  return str(value).lower() if isinstance(value, bool) else str(value).strip()


def _prepare_classification(layout, paths: dict, work_dir: str) -> Prepared:
  keys, text, pair = _CLASSIFICATION[layout.name]
  rows, notes = {}, []
  for split in ("train", "dev"):
    read = base.read_json_lines(paths[split], keys + ("label",))
    kept = [r for r in read if _label(r) != "-"]  # NLI: no annotator majority
    if len(kept) < len(read):
      notes.append(f"{os.path.basename(paths[split])}: {len(read) - len(kept)} row(s) "
                   "labelled '-' dropped")
      logging.info("%s: %s", layout.name, notes[-1])
    rows[split] = kept
  base.check_dev_labels(layout, [{"label": _label(r)} for r in rows["train"]],
                        [{"label": _label(r)} for r in rows["dev"]], paths)

  def convert(split_rows, path, labelled):
    return base.text_rows(split_rows, lambda r: text(r, path),
                          (lambda r: pair(r, path)) if pair else None, labelled, _label)

  os.makedirs(work_dir, exist_ok=True)
  out = {s: base.write_jsonl(os.path.join(work_dir, f"{s}.jsonl"), convert(r, paths[s], True))
         for s, r in rows.items()}
  test, ids = None, []
  if paths.get("test"):
    test_rows = base.read_json_lines(paths["test"], keys)
    ids = base.require_ids(layout, test_rows, "id", paths["test"])
    test = base.write_jsonl(os.path.join(work_dir, "test.jsonl"),
                            convert(test_rows, paths["test"], False))
  labels = tuple(fd.infer_label_list(_label(r) for r in rows["train"]))
  options = base.SEQUENCE_OPTIONS if pair else base.SINGLE_OPTIONS
  return Prepared("classification", out["train"], out["dev"], test, dict(options), labels, ids,
                  notes=notes)


def _submit_lines(layout, prepared: Prepared, predictions: dict, out_dir: str, *, stem: str,
                  key: str = "prediction") -> list[str]:
  if predictions.get("test") is None:
    return []
  rows = base.read_predictions(predictions["test"])
  if len(rows) != len(prepared.test_ids):
    raise SuiteError(f"{layout.name}: {len(rows)} predictions for {len(prepared.test_ids)} "
                     "test ids")
  path = os.path.join(out_dir, f"{stem}_predict.json")
  return [base.write_jsonl(path, [{"id": i, "label": r[key]}
                                  for i, r in zip(prepared.test_ids, rows)])]


# ----------------------------------------------------------------------------- CMRC 2018


def _prepare_cmrc(layout, paths: dict, work_dir: str) -> Prepared:
  for split in ("train", "dev"):
    try:
      squad_data.read_qa_file(paths[split], version_2_with_negative=False, labelled=True)
    except ValueError as e:
      raise SuiteError(f"{e} (CMRC 2018 is SQuAD's JSON layout: data / paragraphs / "
                       "context, qas / id, question, answers)") from None
  ids = []
  if paths.get("test"):
    test = squad_data.read_qa_file(paths["test"], version_2_with_negative=False, labelled=False)
    ids = [e.id for e in test.examples]
    if any(not i for i in ids):
      raise SuiteError(f"{paths['test']}: a question without an id; CMRC 2018's submission "
                       "is keyed by them")
  # Each run's best epoch by EM: CLUE scores CMRC 2018 by it.
  return Prepared("qa", paths["train"], paths["dev"], paths.get("test"),
                  {"qa_metric": "cmrc", "metric_for_best": "exact"}, None, ids)


def _submit_cmrc(layout, prepared, predictions, out_dir) -> list[str]:
  if predictions.get("test") is None:
    return []
  with open(predictions["test"], encoding="utf-8") as f:
    answers = json.load(f)
  missing = [i for i in prepared.test_ids if i not in answers]
  if missing:
    raise SuiteError(f"CMRC2018: no prediction for test question(s) {missing[:3]}")
  path = os.path.join(out_dir, "cmrc2018_predict.json")
  write_text_atomic(path, json.dumps({i: answers[i] for i in prepared.test_ids},
                                     ensure_ascii=False, indent=1))
  return [path]


# ----------------------------------------------------------------------------- CLUENER


def bio_tags(text: str, label: dict, path: str, line: int) -> list[str]:
  """Per character, B-/I-type or O from CLUENER's {type: {entity: [[start, end]]}} (end
  inclusive)."""
  tags = ["O"] * len(text)
  for kind, entities in label.items():
    for entity, spans in entities.items():
      for start, end in spans:
        if text[start:end + 1] != entity:
          raise SuiteError(f"{path}:{line}: {kind} span [{start}, {end}] is "
                           f"{text[start:end + 1]!r}, not {entity!r}")
        tags[start:end + 1] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start)
  return tags


def entity_spans(text: str, tags: list[str]) -> dict:
  """CLUENER's label object from BIO tags (an I- after O or another type starts one)."""
  out: dict = {}
  start, kind = None, None
  for i, tag in enumerate(list(tags) + ["O"]):
    continues = tag.startswith("I-") and kind == tag[2:]
    if start is not None and not continues:
      out.setdefault(kind, {}).setdefault(text[start:i], []).append([start, i - 1])
      start, kind = None, None
    if tag != "O" and not continues:
      start, kind = i, tag[2:]
  return out


def _prepare_cluener(layout, paths: dict, work_dir: str) -> Prepared:
  os.makedirs(work_dir, exist_ok=True)
  out, tags_seen = {}, {}
  for split in ("train", "dev"):
    rows = base.read_json_lines(paths[split], ("text", "label"))
    converted = [{"tokens": list(r["text"]), "tags": bio_tags(r["text"], r["label"],
                                                              paths[split], r["_line"])}
                 for r in rows]
    tags_seen[split] = [{"label": t} for c in converted for t in c["tags"]]
    out[split] = base.write_jsonl(os.path.join(work_dir, f"{split}.jsonl"), converted)
  base.check_dev_labels(layout, tags_seen["train"], tags_seen["dev"], paths)
  test, ids = None, []
  if paths.get("test"):
    rows = base.read_json_lines(paths["test"], ("text",))
    ids = base.require_ids(layout, rows, "id", paths["test"])
    test = base.write_jsonl(os.path.join(work_dir, "test.jsonl"),
                            [{"tokens": list(r["text"])} for r in rows])
  labels = tuple(fd.infer_label_list((t["label"] for t in tags_seen["train"]), ner=True))
  return Prepared("ner", out["train"], out["dev"], test, {"tokens_key": "tokens",
                                                          "tags_key": "tags"}, labels, ids)


def read_conll_tags(path: str) -> list[list[str]]:
  """Per sentence, the tags of the loop's CoNLL predictions (`token tag` lines; a token may
  be a space)."""
  sentences, tags = [], []
  with open(path, encoding="utf-8") as f:
    for line in f.read().split("\n"):
      if line == "":
        if tags:
          sentences.append(tags)
        tags = []
      else:
        tags.append(line.rsplit(" ", 1)[1])
  if tags:
    sentences.append(tags)
  return sentences


def _submit_cluener(layout, prepared, predictions, out_dir) -> list[str]:
  if predictions.get("test") is None:
    return []
  texts = ["".join(json.loads(l)["tokens"]) for l in open(prepared.test, encoding="utf-8")
           if l.strip()]
  tags = read_conll_tags(predictions["test"])
  if len(tags) != len(texts):
    raise SuiteError(f"CLUENER: {len(tags)} predicted sentences for {len(texts)} test texts")
  rows = [{"id": i, "label": entity_spans(t, s)} for i, t, s in zip(prepared.test_ids, texts, tags)]
  return [base.write_jsonl(os.path.join(out_dir, "cluener_predict.json"), rows)]


# ----------------------------------------------------------------------------- C3, CHID


def _prepare_c3(layout, paths: dict, work_dir: str) -> Prepared:
  os.makedirs(work_dir, exist_ok=True)
  out = {}
  for split in ("train", "dev"):
    documents = []
    for prefix in ("d-", "m-"):  # dialogue and mixed-genre halves, read together
      path = os.path.join(paths["folder"], f"{prefix}{split}.json")
      if os.path.exists(path):
        mc_text.read_multiple_choice(path)  # its layout checked, errors naming the file
        with open(path, encoding="utf-8") as f:
          documents += json.load(f)
    out[split] = os.path.join(work_dir, f"{split}.json")
    write_text_atomic(out[split], json.dumps(documents, ensure_ascii=False))
  ids = []
  if paths.get("test"):
    with open(paths["test"], encoding="utf-8") as f:
      documents = json.load(f)
    examples = mc_text.read_multiple_choice(paths["test"], labelled=False)  # layout checked
    for d, doc in enumerate(documents, 1):
      for q in doc[1]:
        if "id" not in q:
          raise SuiteError(f"{paths['test']}: document {d}: a question without an id; C3's "
                           "submission is keyed by it")
        ids.append(q["id"])  # as the file has it (a number in CLUE's), in reading order
    if len(ids) != len(examples):
      raise SuiteError(f"{paths['test']}: {len(examples)} questions but {len(ids)} ids")
  return Prepared("multiple_choice", out["train"], out["dev"], paths.get("test"), {}, None, ids)


def _prepare_chid(layout, paths: dict, work_dir: str) -> Prepared:
  for split in ("train", "dev"):
    mc_text.read_multiple_choice(paths[split])  # answers beside it, layout checked
  ids = ([e.id for e in mc_text.read_multiple_choice(paths["test"], labelled=False)]
         if paths.get("test") else [])
  return Prepared("multiple_choice", paths["train"], paths["dev"], paths.get("test"), {}, None,
                  ids)


def _submit_chid(layout, prepared, predictions, out_dir) -> list[str]:
  if predictions.get("test") is None:
    return []
  rows = base.read_predictions(predictions["test"])
  path = os.path.join(out_dir, "chid11_predict.json")
  write_text_atomic(path, json.dumps({r["id"]: r["prediction"] for r in rows}, indent=1))
  return [path]


# ----------------------------------------------------------------------------- the suite

ACC = (Column("Acc", "accuracy"),)


def _classification(name, stem, **kw) -> base.TaskLayout:
  return base.TaskLayout(name, _folders(name.lower()), FILES, _prepare_classification, ACC,
                         functools.partial(_submit_lines, stem=stem), **kw)


TASKS = (
    _classification("AFQMC", "afqmc"),
    _classification("TNEWS", "tnews11"),
    _classification("IFLYTEK", "iflytek"),
    _classification("CMNLI", "cmnli", in_average=False),
    _classification("OCNLI", "ocnli_50k"),
    _classification("CLUEWSC2020", "cluewsc11"),
    _classification("CSL", "csl"),
    base.TaskLayout("CMRC2018", _folders("cmrc2018"), FILES, _prepare_cmrc,
                    (Column("EM", "exact", scale=1.0), Column("F1", "f1", scale=1.0)),
                    _submit_cmrc, score_columns=("EM",)),
    base.TaskLayout("CHID", _folders("chid"), FILES, _prepare_chid, ACC, _submit_chid),
    base.TaskLayout("C3", _folders("c3"), (("d-train.json", "m-train.json"),
                                           ("d-dev.json", "m-dev.json"), FILES[2]),
                    _prepare_c3, ACC,
                    functools.partial(_submit_lines, stem="c311")),
    base.TaskLayout("CLUENER", _folders("cluener"), FILES, _prepare_cluener,
                    (Column("F1", "f1"),), _submit_cluener, in_average=False),
)

CLUE = base.Suite(
    "CLUE", TASKS,
    "CLUE 1.1 score (cluebenchmarks.com; Xu et al., COLING 2020): the unweighted mean of the "
    "nine tasks' scores, accuracy for AFQMC, TNEWS, IFLYTEK, OCNLI, CLUEWSC2020, CSL, CHID and "
    "C3, EM for CMRC2018. CMNLI (CLUE 1.0) and CLUENER (its own leaderboard) are reported "
    "beside, not averaged. Computed here on the dev sets.")
