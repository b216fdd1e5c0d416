"""The HTTP service on a loopback port, driven with real HTTP requests: every task's
answers against the model's, concurrent clients, batch-independent answers, the
bad-input table; SIGTERM drain and start-up errors in a subprocess (launch.serve)."""
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bert_jax.serving import export_artifact
from bert_jax.serving import load
from bert_jax.serving import runtime
from tests.helpers import REPO
from tests.helpers import serving as S

TEXTS = ["good w1 w2", "w3 bad w4 w5 w6 w7 w8 w9 w10 w11 w12", "我爱北京", "mary w5 great",
         "w7 " * 12 + "awful", "john smith w2 paris w3 rome", "上海的人", "poor"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve")
  out = {}
  for task in ("classification", "regression", "ner", "qa"):
    model_dir = S.make_model_dir(str(root / task), task, seed=1)
    export_artifact.export(model_dir, str(root / f"{task}-art"), bucket_widths=(16,))
    out[task] = (model_dir, str(root / f"{task}-art"))
  return out


@pytest.fixture(scope="module")
def classifier(artifacts):
  server = S.ServerThread(artifacts["classification"][1], max_batch=4, max_wait_ms=30,
                          max_body_bytes=4096, max_texts=8, max_chars=200)
  yield server
  server.close()


def _one_row_at_a_time(server, body):
  """The answers of the artifact run on each of the request's rows alone, at full width
  (a shape the warm-up compiled): no batching, no buckets. (That the artifact is the
  model is test_artifact's.)"""
  prepared = server.text.prepare(body)
  outs = [server.batcher.artifact.run({k: v[i:i + 1] for k, v in prepared.rows.items()
                                       if k in runtime.INPUTS}, strict=True)["predictions"]
          for i in range(prepared.num_rows)]
  return prepared.answer(jax.tree.map(lambda *xs: np.concatenate(xs), *outs))


def test_classification_answers_are_the_models(classifier, artifacts):
  status, got = S.http(classifier.url + "/predict", {"texts": TEXTS})
  assert status == 200
  want = _one_row_at_a_time(classifier, {"texts": TEXTS})
  for g, w in zip(got["predictions"], want):
    assert g["label"] == w["label"] and set(g["probabilities"]) == {"neg", "pos"}
    assert max(abs(g["probabilities"][k] - w["probabilities"][k]) for k in ("neg", "pos")) <= 1e-5
    assert g["truncated"] is False
  status, got = S.http(classifier.url + "/predict", {"texts": ["w1 " * 40]})
  assert status == 200 and got["predictions"][0]["truncated"] is True  # 42 tokens > 32
  status, meta = S.http(classifier.url + "/metadata")
  assert meta["task"] == "classification" and meta["labels"] == ["neg", "pos"]
  assert meta["compiled_shapes"] == [[b, w] for b in (1, 2, 4) for w in (16, 32)]
  assert S.http(classifier.url + "/healthz") == (200, {"status": "ready"})


def test_answers_do_not_depend_on_the_batch(classifier):
  """Each text alone, then all at once from 8 concurrent clients (batched together at
  several batch sizes): the same answers."""
  alone = [S.http(classifier.url + "/predict", {"texts": [t]})[1]["predictions"][0]
           for t in TEXTS]
  before = classifier.batcher.stats.batches, classifier.batcher.stats.rows
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for _ in range(3):
      together = list(pool.map(
          lambda t: S.http(classifier.url + "/predict", {"texts": [t]})[1]["predictions"][0],
          TEXTS))
      for a, b in zip(alone, together):
        assert a["label"] == b["label"]
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) <= 1e-6
  batches = classifier.batcher.stats.batches - before[0]
  rows = classifier.batcher.stats.rows - before[1]
  assert rows == 24 and batches < rows  # requests were batched with each other



def test_the_load_client_drives_the_service(classifier):
  """launch.benchmark_serve's client: pre-encoded bodies over one session, every answer
  counted. (Whether requests in flight together share a batch depends on their timing
  here; test_batcher.py proves the scheduling against a model it holds.)"""
  before = classifier.batcher.stats.requests
  got = load.drive(classifier.url + "/predict", [{"texts": [t]} for t in TEXTS], 4, 24)
  assert got["requests"] == 24 and got["errors"] == 0 and got["requests_per_s"] > 0
  assert 0 < got["p50_ms"] <= got["p95_ms"] <= got["p99_ms"]
  assert classifier.batcher.stats.requests - before == 24
  assert load.drive(classifier.url + "/predict", [{"texts": []}], 1, 2)["errors"] == 2

BAD = [  # (body, status, field)
    (b"{not json", 400, "body"),
    (b"\xff\xfe\x00", 400, "body"),
    (b"[1, 2]", 422, "body"),
    (b"[" * 1500 + b"]" * 1500, 400, "body"),  # deeper than Python's recursion limit
    ({}, 422, "texts"),
    ({"text": ["good"]}, 422, "texts"),
    ({"texts": "good"}, 422, "texts"),
    ({"texts": []}, 422, "texts"),
    ({"texts": ["good", 3]}, 422, "texts[1]"),
    ({"texts": [None]}, 422, "texts[0]"),
    ({"texts": ["good"], "text_pairs": ["a", "b"]}, 422, "text_pairs"),
    ({"texts": ["good"], "text_pairs": {"a": 1}}, 422, "text_pairs"),
    ({"texts": ["good"] * 9}, 413, "texts"),
    ({"texts": ["x" * 201]}, 413, "texts[0]"),
    (json.dumps({"texts": ["good"], "note": "x" * 5000}).encode(), 413, "body"),  # > 4096 B
]


def test_bad_input_gets_a_json_error_naming_the_field(classifier):
  for body, status, field in BAD:
    got = S.http(classifier.url + "/predict", body)
    assert got[0] == status and got[1]["field"] == field, (body, got)
    assert isinstance(got[1]["error"], str) and got[1]["error"]
  assert S.http(classifier.url + "/predict", method="GET")[0] == 405
  assert S.http(classifier.url + "/nowhere")[0] == 404
  # A client that sends half a request and hangs up blocks nobody.
  with socket.create_connection(("127.0.0.1", int(classifier.url.rsplit(":", 1)[1]))) as s:
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"te")
    status, got = S.http(classifier.url + "/predict", {"texts": ["good"]})
  assert status == 200 and got["predictions"][0]["label"] in ("neg", "pos")


def _serve(art, body):
  """(status, answers) of the request to a service of `art`, and the answers one row at
  a time."""
  server = S.ServerThread(art, max_batch=2, max_wait_ms=5)
  try:
    return S.http(server.url + "/predict", body), _one_row_at_a_time(server, body)
  finally:
    server.close()


def test_regression_ner_and_qa(artifacts):
  body = {"texts": TEXTS[:3], "text_pairs": ["w1", "北京", "w2 w3"]}
  (status, got), want = _serve(artifacts["regression"][1], body)
  assert status == 200
  assert all(abs(g["value"] - w["value"]) <= 1e-5 for g, w in zip(got["predictions"], want))

  texts = ["john smith, w2 went to paris.", "我爱北京和上海", "w1 " * 40 + "rome"]
  (status, got), want = _serve(artifacts["ner"][1], {"texts": texts})
  assert status == 200 and got["predictions"] == want
  assert sum(len(p["entities"]) for p in got["predictions"]) > 0
  for text, p in zip(texts, got["predictions"]):
    for e in p["entities"]:
      assert text[e["start"]:e["end"]] == e["text"] and e["type"] in ("LOC", "PER")
  assert [p["truncated"] for p in got["predictions"]] == [False, False, True]

  body = {"questions": ["w0 w1", "北京在哪?"],
          "contexts": ["w5 w6 john smith w7 w8 " * 6, "我爱北京。上海的人在北京。"]}
  (status, got), want = _serve(artifacts["qa"][1], body)
  assert status == 200
  for g, w, context in zip(got["predictions"], want, body["contexts"]):
    assert g["answer"] == w["answer"] and (g["start"], g["end"]) == (w["start"], w["end"])
    assert context[g["start"]:g["end"]] == g["answer"] and 0 < g["score"] <= 1
    assert abs(g["score"] - w["score"]) <= 1e-4


def _launch(args, **kw):
  return subprocess.Popen([sys.executable, "-m", "launch.serve", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


def test_sigterm_drains_in_flight_requests(artifacts, tmp_path):
  model_dir, art = artifacts["classification"]
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = _launch([f"--artifact={art}", f"--model_dir={model_dir}", f"--port={port}",
                  "--max_batch=2", "--max_wait_ms=1500"])
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
      try:
        if S.http(url + "/healthz")[0] == 200:
          break
      except OSError:
        time.sleep(0.2)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      # max_wait_ms=1500: the first request waits in the batcher while SIGTERM arrives.
      futures = [pool.submit(S.http, url + "/predict", {"texts": [t]}) for t in TEXTS[:3]]
      time.sleep(0.7)
      proc.send_signal(signal.SIGTERM)
      answers = [f.result() for f in futures]
    out, err = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert [a[0] for a in answers] == [200, 200, 200], answers
  assert proc.returncode == 0, err[-2000:]
  assert "stopped" in out
  with pytest.raises(OSError):
    S.http(url + "/healthz", timeout=2)


def test_start_up_errors_are_one_line_exit_2(artifacts, tmp_path):
  model_dir, art = artifacts["classification"]
  other = artifacts["regression"][0]
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    cases = [([f"--artifact={art}", f"--port={port}"], f"--port={port}: cannot listen"),
             ([f"--artifact={art}", f"--model_dir={other}", "--port=0"],
              "exported from another model"),
             ([f"--artifact={model_dir}", "--port=0"], "not a serving artifact")]
    procs = [(_launch(args), want) for args, want in cases]
    for proc, want in procs:
      out, err = proc.communicate(timeout=240)
      lines = [l for l in err.splitlines() if l.startswith("error:")]
      assert proc.returncode == 2 and len(lines) == 1 and want in lines[0], err[-2000:]
      assert "Traceback" not in err
