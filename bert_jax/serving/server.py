"""The HTTP service: JSON in and out over aiohttp, dynamic batching behind it.

aiohttp (aio-libs): one well-kept package that is the server (asyncio, HTTP/1.1
keep-alive, a request body limit that refuses before reading, graceful shutdown on
SIGTERM in `run_app`) and the client the load benchmark drives it with.

Endpoints:
  POST /predict   a task's request (see docs/serving.md) ->
                  {"predictions": [one answer per text / question]}
  GET  /healthz   200 {"status": "ready"} once every shape is compiled; 503 before
  GET  /metadata  the artifact's manifest and the serving settings
Errors are JSON, {"error": message, "field": name}: 400 (not JSON), 413 (body, texts
or text too large), 422 (missing field, wrong type), 503 (warming up or stopping), 500
(a failure of this request alone; the process keeps serving).

The text side is handed in (duck typed: `prepare(body) -> Prepared`, raising
`RequestError`-like ValueErrors with `status` and `field`): bert_jax never imports the
text package.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

from aiohttp import web

from bert_jax.serving import batcher as batcher_lib

_BATCHER = web.AppKey("batcher", batcher_lib.Batcher)
_TEXT = web.AppKey("text", object)
_STATE = web.AppKey("state", dict)
# Requests this small are tokenised and answered on the event loop thread; larger ones
# on a worker thread (see _predict).
INLINE_BODY_BYTES = 4096
INLINE_ROWS = 8


def _error(status: int, message: str, field: str | None = None) -> web.Response:
  return web.json_response({"error": message, "field": field}, status=status)


@web.middleware
async def _errors(request: web.Request, handler):
  """Whatever a client sends, an answer in JSON; a bug fails its own request only."""
  try:
    return await handler(request)
  except web.HTTPRequestEntityTooLarge:
    limit = request.app[_STATE]["max_body_bytes"]
    return _error(413, f"request body over the limit of {limit} bytes", "body")
  except web.HTTPException as e:
    if e.status >= 400:
      return _error(e.status, e.reason)
    raise
  except asyncio.CancelledError:
    raise
  except ConnectionResetError:
    # The client went away mid-request (aiohttp's own class derives from this): nobody to
    # answer, and not the service's fault.
    logging.info("client disconnected before its request was read")
    return _error(400, "the connection was lost before the request was read", "body")
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("request failed")
    return _error(500, f"internal error: {type(e).__name__}: {e}")


async def _predict(request: web.Request) -> web.Response:
  state = request.app[_STATE]
  if not state["ready"]:
    return _error(503, "warming up: not ready yet")
  raw = await request.read()
  try:
    body = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    return _error(400, f"not valid JSON: {e}", "body")
  except RecursionError:
    return _error(400, "not valid JSON: nested too deeply", "body")
  # Tokenising a long QA context, or decoding its windows, takes a while: off the event
  # loop, which keeps answering other clients meanwhile. A short request is done where
  # it is (a tenth of a millisecond): a hop to a worker thread and back costs more than
  # that, and under load, handing the GIL between threads costs milliseconds.
  offload = len(raw) > INLINE_BODY_BYTES
  text = request.app[_TEXT]
  try:
    prepared = await _call(offload, text.prepare, body)
  except ValueError as e:
    status = getattr(e, "status", 422)
    return _error(status, str(e), getattr(e, "field", None))
  rows = await request.app[_BATCHER].submit(prepared.rows)
  answers = await _call(offload or prepared.num_rows > INLINE_ROWS, prepared.answer, rows)
  return web.json_response({"predictions": answers})


async def _call(offload: bool, fn, *args):
  if offload:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
  return fn(*args)


async def _healthz(request: web.Request) -> web.Response:
  if request.app[_STATE]["ready"]:
    return web.json_response({"status": "ready"})
  return web.json_response({"status": "warming up"}, status=503)


async def _metadata(request: web.Request) -> web.Response:
  b = request.app[_BATCHER]
  return web.json_response(dict(
      request.app[_STATE]["metadata"], max_batch=b.max_batch, max_wait_ms=b.max_wait * 1000,
      batch_sizes=list(b.sizes), compiled_shapes=[list(s) for s in b.artifact.compiled_shapes]))


def make_app(batcher: batcher_lib.Batcher, text: Any, *, max_body_bytes: int = 1 << 20,
             metadata: dict | None = None) -> web.Application:
  """The application; warm-up (compiling every shape) runs in the background at
  start-up, and /healthz says ready when it is done."""
  app = web.Application(middlewares=[_errors], client_max_size=max_body_bytes)
  app[_BATCHER], app[_TEXT] = batcher, text
  app[_STATE] = {"ready": False, "metadata": dict(metadata or batcher.artifact.manifest),
                 "max_body_bytes": max_body_bytes}
  app.router.add_post("/predict", _predict)
  app.router.add_get("/healthz", _healthz)
  app.router.add_get("/metadata", _metadata)

  async def background(app_):
    loop = asyncio.get_running_loop()
    batcher.start(loop)

    async def warm():
      await loop.run_in_executor(None, batcher.warm_up)
      app_[_STATE]["ready"] = True
      logging.info("ready: compiled %d shapes", len(batcher.artifact.compiled_shapes))

    warming = asyncio.create_task(warm())
    yield
    warming.cancel()
    await asyncio.gather(warming, return_exceptions=True)
    # In-flight requests are answered by now (aiohttp waits for them before cleaning
    # up); the model thread finishes its batch and stops.
    await loop.run_in_executor(None, batcher.close)

  app.cleanup_ctx.append(background)
  return app


def bind(host: str, port: int) -> socket.socket:
  """A listening socket, or a ValueError naming the port when it is taken."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    raise ValueError(f"--port={port}: cannot listen on {host}:{port} ({e.strerror})") from e
  sock.listen(1024)
  return sock


def serve(app: web.Application, sock: socket.socket, *, shutdown_timeout: float = 30.0) -> None:
  """Serves until SIGTERM / SIGINT: then stops accepting, answers what is in flight
  (up to `shutdown_timeout` seconds) and returns."""
  web.run_app(app, sock=sock, shutdown_timeout=shutdown_timeout, print=None,
              handle_signals=True, access_log=None)
