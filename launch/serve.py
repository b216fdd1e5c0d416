r"""Serves a fine-tuned model over HTTP (JSON), with dynamic batching.

  python -m launch.serve --model_dir=OUT/best_model --port=8080
  python -m launch.serve --artifact=ART --port=8080 [--max_batch=32 --max_wait_ms=0]

--artifact: a StableHLO serving artifact (python -m launch.export_serving); without it,
--model_dir is exported to one for this machine at start-up (in a temporary directory).
Given both, the artifact must be of that model (its hash is checked). Every (batch size,
bucket width) is compiled before /healthz says ready; nothing compiles while serving.
SIGTERM: stop accepting, answer what is in flight, exit 0. The API: docs/serving.md.
"""
import logging
import os
import tempfile

from absl import app
from absl import flags

from launch import cli

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A fine-tuned model directory "
                                 "(OUT/best_model of launch.finetune).")
_ARTIFACT = flags.DEFINE_string("artifact", None, "A serving artifact directory "
                                "(launch.export_serving --format=stablehlo).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: all).")
_PORT = flags.DEFINE_integer("port", 8080, "Port to listen on.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 32, "Most rows per model call (1: batching off).")
_MAX_WAIT_MS = flags.DEFINE_float("max_wait_ms", 0.0, "Longest a request that finds the model "
                                  "idle waits for others to batch with, in milliseconds (requests "
                                  "that arrive while the model is busy go together into its next "
                                  "batch without waiting).")
_MAX_BODY = flags.DEFINE_integer("max_body_bytes", 1 << 20, "Largest request body (413 above).")
_MAX_TEXTS = flags.DEFINE_integer("max_texts", 64, "Most texts (questions) per request (413).")
_MAX_CHARS = flags.DEFINE_integer("max_chars", 20_000, "Most characters per text (413).")
_SHUTDOWN = flags.DEFINE_float("shutdown_timeout", 30.0, "Seconds to finish in-flight requests "
                               "after SIGTERM.")


def load(model_dir: str | None, artifact_dir: str | None, scratch: str):
  """(Artifact, text side) of the flags: the artifact checked against this machine and
  against `model_dir`'s weights when both are given."""
  from bert_jax.serving import export_artifact, runtime  # pylint: disable=import-outside-toplevel
  from data_pipeline.serving import requests  # pylint: disable=import-outside-toplevel
  if not model_dir and not artifact_dir:
    raise ValueError("--model_dir or --artifact: one is required")
  if model_dir:
    export_artifact.read_model_dir(model_dir)  # a directory without its manifest fails here
  if artifact_dir is None:
    artifact_dir = os.path.join(scratch, "artifact")
    export_artifact.export(model_dir, artifact_dir, platforms=(runtime.current_platform(),))
  artifact = runtime.load(artifact_dir)
  if model_dir and artifact.manifest["model_hash"] != export_artifact.model_hash(model_dir):
    raise ValueError(f"--artifact={artifact_dir} was exported from another model than "
                     f"--model_dir={model_dir} (model hashes differ)")
  limits = requests.Limits(max_texts=_MAX_TEXTS.value, max_chars=_MAX_CHARS.value)
  return artifact, requests.ServingText(artifact.manifest, artifact_dir, limits)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from bert_jax.serving import batcher as batcher_lib  # pylint: disable=import-outside-toplevel
  from bert_jax.serving import server  # pylint: disable=import-outside-toplevel
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  sock = server.bind(_HOST.value, _PORT.value)  # a port in use fails before any loading
  with tempfile.TemporaryDirectory(prefix="bert-jax-serve-") as scratch:
    artifact, text = load(_MODEL_DIR.value, _ARTIFACT.value, scratch)
    batcher = batcher_lib.Batcher(artifact, max_batch=_MAX_BATCH.value,
                                  max_wait_ms=_MAX_WAIT_MS.value,
                                  per_token=artifact.manifest.get("per_token_outputs", False))
    application = server.make_app(batcher, text, max_body_bytes=_MAX_BODY.value)
    print(f"serving {artifact.manifest['task']} on http://{_HOST.value}:{_PORT.value} "
          f"(max_batch={_MAX_BATCH.value}, max_wait_ms={_MAX_WAIT_MS.value})", flush=True)
    server.serve(application, sock, shutdown_timeout=_SHUTDOWN.value)
    batcher.close()
  print("stopped", flush=True)


if __name__ == "__main__":
  cli.run(main)
