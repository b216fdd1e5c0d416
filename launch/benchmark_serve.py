r"""Load benchmark of the service, and raw prediction speed beside PyTorch and onnxruntime.

  python -m launch.benchmark_serve --model_dir=OUT/best_model --eval_file=dev.tsv \
      [--in_flight=1,8,64 --requests=400 --max_batch=32 --max_wait_ms=0]

1. Starts `launch.serve` twice on a loopback port (dynamic batching at --max_batch, then
   batching off: --max_batch=1) and drives each over real HTTP with 1, 8, 64 clients in
   flight, each sending one eval-file text per request: requests/s, p50/p95/p99, and the
   service's CPU time per request (Linux).
2. On the eval file's rows, in the same batches of --batch_size (length-bucketed as the
   service pads them): rows/s of the StableHLO artifact (jax runtime), transformers'
   PyTorch model and onnxruntime (fp32 and int8), and each one's accuracy (classification)
   or largest difference from the artifact. One run; prints JSON lines and a table.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from launch import cli

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A fine-tuned model directory.")
_EVAL_FILE = flags.DEFINE_string("eval_file", None, "The task's labelled eval file (its texts "
                                 "are the requests).")
_IN_FLIGHT = flags.DEFINE_list("in_flight", ["1", "8", "64"], "Clients in flight.")
_REQUESTS = flags.DEFINE_integer("requests", 400, "Requests per load level.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 32, "The service's --max_batch.")
_MAX_WAIT_MS = flags.DEFINE_float("max_wait_ms", 0.0, "The service's --max_wait_ms.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Rows per batch of the raw-speed runs.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 1, "PyTorch intra-op threads (0: its "
                                     "default, one per core; on a shared machine its "
                                     "spinning threads slow it down many times over).")
flags.mark_flags_as_required(["model_dir", "eval_file"])


def _bodies(task, items):
  if task == "qa":
    return [{"questions": [e.question], "contexts": [e.context]} for e in items]
  if task == "ner":
    return [{"texts": [" ".join(s.tokens)]} for s in items]
  return [{"texts": [e.text], **({"text_pairs": [e.text_pair]} if e.text_pair else {})}
          for e in items]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _load_levels(artifact_dir, bodies, max_batch, in_flight):
  """One service (a subprocess, as deployed), driven at each load level."""
  from bert_jax.serving import load  # pylint: disable=import-outside-toplevel
  port = _free_port()
  proc = subprocess.Popen([sys.executable, "-m", "launch.serve", f"--artifact={artifact_dir}",
                           f"--port={port}", f"--max_batch={max_batch}",
                           f"--max_wait_ms={_MAX_WAIT_MS.value}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    _wait_ready(url, proc)
    rows = []
    for n in in_flight:
      load.drive(url + "/predict", bodies, n, min(2 * n, 64))  # connections up, caches warm
      cpu = _cpu_seconds(proc.pid)
      row = load.drive(url + "/predict", bodies, n, _REQUESTS.value)
      if cpu is not None:
        row["server_cpu_ms_per_request"] = 1000 * (_cpu_seconds(proc.pid) - cpu) / row["requests"]
      rows.append(dict(max_batch=max_batch, **row))
      print(json.dumps(rows[-1]), flush=True)
    return rows
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)


def _cpu_seconds(pid):
  """CPU time (user + system, all threads) the process has used, from /proc (Linux); None
  elsewhere. On a shared machine a request's CPU cost is steadier than its latency."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      fields = f.read().rsplit(")", 1)[1].split()
  except OSError:
    return None
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(url, proc):
  import urllib.request  # pylint: disable=import-outside-toplevel
  deadline = time.monotonic() + 600
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"the service exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    try:
      with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
        if r.status == 200:
          return
    except OSError:
      time.sleep(0.5)
  raise RuntimeError("the service did not become ready in 600 s")


def _speed(model_dir, artifact_dir, onnx_dir, encoded, task):
  """Raw speed and accuracy of each engine on the same length-bucketed batches."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  from bert_jax.serving import batcher, load, onnx_export, runtime  # pylint: disable=import-outside-toplevel
  art = runtime.load(artifact_dir)
  widths = tuple(art.manifest["bucket_widths"])
  arrays = encoded.arrays
  lengths = batcher._lengths(arrays["attention_mask"])  # pylint: disable=protected-access
  order = np.argsort(lengths, kind="stable")
  batches, index = [], []
  for s in range(0, len(order), _BATCH_SIZE.value):
    idx = order[s:s + _BATCH_SIZE.value]
    w = int(batcher.narrowest_widths(lengths[idx].max(), widths))
    batches.append({k: arrays[k][idx, :w] for k in runtime.INPUTS})
    index.append(idx)
  art.compile({(len(b["input_ids"]), b["input_ids"].shape[1]) for b in batches})
  torch_model = onnx_export.load_torch_model(model_dir, task)
  if _TORCH_THREADS.value:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(_TORCH_THREADS.value)
  names = onnx_export.output_names(task)
  engines = {"artifact (jax)": lambda b: art.run(b, strict=True)["outputs"],
             "pytorch": lambda b: onnx_export.run_torch(torch_model, b, names)}
  for name, f in (("onnxruntime fp32", onnx_export.MODEL_FILE),
                  ("onnxruntime int8", onnx_export.INT8_FILE)):
    session = ort.InferenceSession(os.path.join(onnx_dir, f), providers=["CPUExecutionProvider"])
    engines[name] = lambda b, s=session: onnx_export.run_onnx(None, b, s)
  rows, reference = [], None
  for name, run in engines.items():
    speed = load.time_batches(run, batches)
    first = np.concatenate([np.asarray(_first(run(b))) for b in batches])
    reference = first if reference is None else reference
    row = dict(engine=name, **speed, max_abs_diff_vs_artifact=float(np.max(np.abs(
        first - reference))) if first.shape == reference.shape else None)
    if task == "classification":
      gold = encoded.arrays["labels"][np.concatenate(index)]
      row["accuracy"] = float(np.mean(first.argmax(-1) == gold))
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def _first(out):
  """The first output array of an engine's outputs (logits / start logits)."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.leaves(out)[0]


def _table(load_rows, speed_rows) -> str:
  lines = ["| max_batch | in flight | requests/s | p50 ms | p95 ms | p99 ms | errors | "
           "server CPU ms/request |", "|---|---|---|---|---|---|---|---|"]
  lines += [f"| {r['max_batch']} | {r['in_flight']} | {r['requests_per_s']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
            f"{r.get('server_cpu_ms_per_request', float('nan')):.2f} |" for r in load_rows]
  lines += ["", "| engine | rows/s | ms/batch | accuracy | max abs diff vs artifact |",
            "|---|---|---|---|---|"]
  lines += [f"| {r['engine']} | {r['rows_per_s']:.0f} | {r['ms_per_batch']:.2f} | "
            f"{r.get('accuracy', '-')} | {r['max_abs_diff_vs_artifact']:.2e} |"
            for r in speed_rows]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from bert_jax.serving import export_artifact, onnx_export, runtime  # pylint: disable=import-outside-toplevel
  from data_pipeline.finetune import tasks as text_tasks  # pylint: disable=import-outside-toplevel
  in_flight = [int(n) for n in _IN_FLIGHT.value]
  meta = export_artifact.read_model_dir(_MODEL_DIR.value)
  task = meta["task"]
  text = text_tasks.make_text_task(task, **{k: meta.get(k) for k in text_tasks.options_of(task)})
  items = text.read(_EVAL_FILE.value, True)
  tokenizer = text.load_tokenizer(_MODEL_DIR.value)
  encoded = text.encode(_EVAL_FILE.value, items, tokenizer, meta["labels"],
                        int(meta["max_seq_length"]))
  with tempfile.TemporaryDirectory(prefix="bert-jax-bench-") as tmp:
    art, onnx_dir = os.path.join(tmp, "stablehlo"), os.path.join(tmp, "onnx")
    export_artifact.export(_MODEL_DIR.value, art, platforms=(runtime.current_platform(),))
    onnx_export.export(_MODEL_DIR.value, onnx_dir, quantize=True)
    bodies = _bodies(task, items)
    load_start = os.getloadavg()[0]  # the machine's own load: the figures depend on it
    load_rows = (_load_levels(art, bodies, _MAX_BATCH.value, in_flight)
                 + _load_levels(art, bodies, 1, in_flight))
    speed_rows = _speed(_MODEL_DIR.value, art, onnx_dir, encoded, task)
  print(f"{os.cpu_count()} CPU cores, load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; task {task}; {len(items)} eval examples\n"
        + _table(load_rows, speed_rows) + "\n\n" + _ceiling(load_rows, speed_rows), flush=True)


def _ceiling(load_rows, speed_rows) -> str:
  """What batching can give on this machine at most: the artifact's own rows/s on full,
  length-sorted batches (no HTTP, no tokenising, no scheduling) over the requests/s of
  batching off at the most clients in flight. Throughput with batching cannot pass the
  first, so the ratio of the two services cannot pass this one."""
  raw = next(r["rows_per_s"] for r in speed_rows if r["engine"].startswith("artifact"))
  most = max(r["in_flight"] for r in load_rows)
  on, off = (next(r["requests_per_s"] for r in load_rows
                  if r["in_flight"] == most and (r["max_batch"] == 1) == unbatched)
             for unbatched in (False, True))
  return (f"at {most} in flight: batching {on / off:.2f}x the throughput of batching off; the "
          f"ceiling, the artifact's raw {raw:.0f} rows/s on full batches over batching off's "
          f"{off:.1f} requests/s: {raw / off:.2f}x")


if __name__ == "__main__":
  cli.run(main)
