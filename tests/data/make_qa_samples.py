"""Rebuilds the QA samples in this folder from the public dev files (see README.md).

python tests/data/make_qa_samples.py CMRC_DEV_JSON SQUAD_V2_DEV_JSON OUT_DIR

Takes a few articles (CMRC 2018: those whose answers hold decimals, thousands separators or
Latin words; SQuAD v2.0: the first paragraphs of the first article) and writes predictions
made by seeded perturbations of the gold spans (exact, widened, narrowed, another span of
the context, empty), so that the official scripts score them between 0 and 100. The
expected scores are what the official scripts print on these files (README.md).
"""
import json
import random
import re
import sys

_NUMERIC_OR_LATIN = re.compile(r"\d[.,]\d|[A-Za-z]{2,}")


def _perturb(rng, context, start, text):
  roll, end = rng.random(), start + len(text)
  if roll < 0.35:
    return text
  if roll < 0.65:  # Widened by a few characters either side.
    lo, hi = max(0, start - rng.randint(0, 6)), min(len(context), end + rng.randint(0, 6))
    return context[lo:hi]
  if roll < 0.8 and len(text) > 1:  # Narrowed.
    lo = start + rng.randint(0, len(text) // 2)
    return context[lo:max(lo + 1, end - rng.randint(0, len(text) // 2))]
  if roll < 0.95:  # Another span of the context.
    lo = rng.randrange(len(context))
    return context[lo:lo + rng.randint(1, 20)]
  return ""


def _predictions(articles, seed):
  rng, out, odds = random.Random(seed), {}, {}
  for article in articles:
    for paragraph in article["paragraphs"]:
      context = paragraph["context"]
      for qa in paragraph["qas"]:
        answers = qa["answers"] or [{"text": "", "answer_start": rng.randrange(len(context))}]
        gold = rng.choice(answers)
        out[qa["id"]] = _perturb(rng, context, gold["answer_start"], gold["text"])
        odds[qa["id"]] = round(rng.uniform(-8.0, 8.0), 4)
  return out, odds


def _dump(path, obj):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, ensure_ascii=False, indent=0)
    f.write("\n")


def main(cmrc_dev, squad_dev, out_dir):
  with open(cmrc_dev, encoding="utf-8") as f:
    cmrc = json.load(f)
  scored = sorted(cmrc["data"], key=lambda a: -sum(
      bool(_NUMERIC_OR_LATIN.search(x["text"])) for p in a["paragraphs"] for q in p["qas"]
      for x in q["answers"]))
  cmrc_sample = {"version": cmrc["version"], "data": scored[:20]}
  _dump(f"{out_dir}/cmrc2018_dev_sample.json", cmrc_sample)
  _dump(f"{out_dir}/cmrc2018_dev_sample_predictions.json", _predictions(cmrc_sample["data"], 0)[0])
  with open(squad_dev, encoding="utf-8") as f:
    squad = json.load(f)
  article = squad["data"][0]
  v2 = {"version": "v2.0", "data": [dict(article, paragraphs=article["paragraphs"][:10])]}
  predictions, odds = _predictions(v2["data"], 1)
  _dump(f"{out_dir}/squad_v2_dev_sample.json", v2)
  _dump(f"{out_dir}/squad_v2_dev_sample_predictions.json", predictions)
  _dump(f"{out_dir}/squad_v2_dev_sample_null_odds.json", odds)
  # SQuAD v1.1 form: the answerable questions of the next paragraphs, without is_impossible.
  paragraphs = [dict(p, qas=[{k: v for k, v in q.items() if k != "is_impossible"}
                             for q in p["qas"] if q["answers"]])
                for p in article["paragraphs"][10:22]]
  v1 = {"version": "1.1", "data": [dict(article, paragraphs=paragraphs)]}
  _dump(f"{out_dir}/squad_v1_dev_sample.json", v1)
  _dump(f"{out_dir}/squad_v1_dev_sample_predictions.json", _predictions(v1["data"], 2)[0])


if __name__ == "__main__":
  main(*sys.argv[1:])
