"""Tiny fine-tuned model directories for the serving tests, written without training.

Random weights (drawn in NumPy, as `finetune.random_hf_dir` does) saved by the fine-tuning
export itself (`finetune.export.save_model`): the same config.json, weights, tokenizer
files and finetune.json as OUT/best_model of a run, in a fraction of a second. The
vocabulary holds the test words plus a few Chinese characters, so that Chinese text
is served too.
"""
import os

import jax
import numpy as np

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import tree as tree_lib
from bert_jax.finetune import export as finetune_export
from bert_jax.finetune import tasks as tasks_lib
from bert_jax.finetune.config import FinetuneConfig
from tests.helpers import finetune as F

CHINESE = list("北京上海我爱在了是的人")
VOCAB = F.SPECIALS + F.WORDS + CHINESE + [",", ".", "?"]
LABELS = {"classification": ["neg", "pos"], "regression": [],
          "ner": ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"], "qa": []}


def _draw(shapes, seed, scale=0.5):
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1] == "scale":
      return np.ones(leaf.shape, np.float32)
    if path[-1] == "bias":
      return (rng.standard_normal(leaf.shape) * 0.1).astype(np.float32)
    return (rng.standard_normal(leaf.shape) * scale).astype(np.float32)

  return tree_lib.unflatten({p: draw(p, x) for p, x in tree_lib.flatten(shapes).items()})


def make_model_dir(directory, task, max_seq_length=32, seed=0):
  """OUT/best_model of a `task` run (random weights); "encoder" gives a pretraining
  directory (BertForPreTraining, no finetune.json)."""
  config = F.tiny_config(len(VOCAB))
  if task == "encoder":
    module = model_lib.BertForPreTraining(config)
    inputs = model_lib.dummy_inputs(config)
  else:
    t = tasks_lib.get(task)
    module = t.model(config, max(len(LABELS[task]), 1))
    inputs = model_lib.dummy_inputs(config, 1, 8, None)
  shapes = F.param_shapes(module, inputs)
  params = jax.tree.map(jax.numpy.asarray, _draw(shapes, seed))
  os.makedirs(directory, exist_ok=True)
  vocab_path = os.path.join(directory, "vocab.txt")
  if task == "encoder":
    interop.save_hf(config, params, directory)
    with open(vocab_path, "w") as f:
      f.write("\n".join(VOCAB) + "\n")
    return directory
  from data_pipeline.finetune import tasks as text_tasks  # pylint: disable=import-outside-toplevel
  # QA windows that fit a tiny max_seq_length.
  options = dict(doc_stride=8, max_query_length=8) if task == "qa" else {}
  text = text_tasks.make_text_task(task, **FinetuneConfig(task=task, **options).text_options())
  scratch = directory + ".vocab"
  os.makedirs(scratch, exist_ok=True)
  with open(os.path.join(scratch, "vocab.txt"), "w") as f:
    f.write("\n".join(VOCAB) + "\n")
  tokenizer = text.load_tokenizer(scratch)
  cfg = FinetuneConfig(task=task, init_from=scratch, output_dir=directory,
                       max_seq_length=max_seq_length)
  finetune_export.save_model(directory, cfg, config, params, LABELS[task],
                             lambda d: text.export_tokenizer(tokenizer, d, 64), text.meta())
  return directory


# ----------------------------------------------------------------------------- HTTP


def http(url, body=None, method=None, timeout=60):
  """(status, JSON body) of one real HTTP request (urllib: what any client speaks)."""
  import json
  import urllib.error
  import urllib.request
  data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
  req = urllib.request.Request(url, data=data, method=method,
                               headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


class ServerThread:
  """The service (`bert_jax.serving.server`) on a loopback port, in a thread of this
  process with its own event loop, as launch.serve runs it: `url`, `batcher`."""

  def __init__(self, artifact_dir, *, max_batch=4, max_wait_ms=20.0, max_body_bytes=1 << 20,
               max_texts=64, max_chars=20_000):
    import asyncio
    import threading
    import time

    from aiohttp import web

    from bert_jax.serving import batcher as batcher_lib
    from bert_jax.serving import runtime
    from bert_jax.serving import server
    from data_pipeline.serving import requests
    artifact = runtime.load(artifact_dir)
    self.text = requests.ServingText(artifact.manifest, artifact_dir,
                                     requests.Limits(max_texts, max_chars))
    self.batcher = batcher_lib.Batcher(artifact, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                       per_token=artifact.manifest["per_token_outputs"])
    app = server.make_app(self.batcher, self.text, max_body_bytes=max_body_bytes)
    sock = server.bind("127.0.0.1", 0)
    self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    self.loop = asyncio.new_event_loop()
    self.runner = web.AppRunner(app, access_log=None)

    def serve():
      asyncio.set_event_loop(self.loop)
      self.loop.run_until_complete(self.runner.setup())
      self.loop.run_until_complete(web.SockSite(self.runner, sock).start())
      self.loop.run_forever()

    self.thread = threading.Thread(target=serve, daemon=True)
    self.thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
      try:
        if http(self.url + "/healthz")[0] == 200:
          return
      except OSError:
        pass
      time.sleep(0.1)
    raise TimeoutError("the service did not warm up")

  def close(self):
    import asyncio
    asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
    self.loop.call_soon_threadsafe(self.loop.stop)
    self.thread.join(60)
    self.batcher.close()
