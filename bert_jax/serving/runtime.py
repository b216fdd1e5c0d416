"""Runs a serving artifact (`export_artifact`) with jax and NumPy alone.

No Flax, no `bert_jax.model`, no text code: the artifact carries the computation
(StableHLO) and the parameters; this module checks the manifest against this process
(format version, platform), places the parameters on the device once, and compiles the
function for each (batch size, width) a server asks for up front, so that nothing
compiles while serving.

  art = runtime.load("ARTIFACT_DIR")
  art.compile([(1, 32), (8, 32)])
  out = art.run({"input_ids": ..., "token_type_ids": ..., "attention_mask": ...})
  out["predictions"], out["outputs"]   # NumPy pytrees, rows as given
"""
from __future__ import annotations

import concurrent.futures
import json
import os
from typing import Iterable, Mapping

import jax
import numpy as np

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODULE_FILE = "model.stablehlo"
PARAMS_FILE = "params.npz"
PLATFORMS = ("cpu", "cuda", "tpu")
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


class ArtifactError(ValueError):
  """An artifact this process cannot run: the message names the file and the reason."""


def current_platform() -> str:
  """This process's default backend under jax.export's names ("gpu" is "cuda" there)."""
  backend = jax.default_backend()
  return "cuda" if backend == "gpu" else backend


def read_manifest(directory: str) -> dict:
  path = os.path.join(directory, MANIFEST_FILE)
  if not os.path.isfile(path):
    raise ArtifactError(f"{directory}: no {MANIFEST_FILE}; not a serving artifact (make one with "
                        "python -m launch.export_serving)")
  with open(path, encoding="utf-8") as f:
    try:
      manifest = json.load(f)
    except json.JSONDecodeError as e:
      raise ArtifactError(f"{path}: invalid JSON ({e})") from e
  if manifest.get("format_version") != FORMAT_VERSION:
    raise ArtifactError(f"{path}: artifact format version {manifest.get('format_version')!r}; "
                        f"this runtime reads version {FORMAT_VERSION} (re-export the model)")
  return manifest


class Artifact:
  """A loaded artifact: `manifest`, `run(arrays)`, `compile(shapes)`."""

  def __init__(self, directory: str, manifest: dict, exported, params: list):
    self.directory = directory
    self.manifest = manifest
    self._exported = exported
    self._params = params
    self._call = jax.jit(exported.call)
    self._compiled: dict[tuple[int, int], object] = {}

  @property
  def compiled_shapes(self) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(self._compiled))

  def compile(self, shapes: Iterable[tuple[int, int]]) -> None:
    """Compiles for each (batch, width) of `shapes` (once each), a thread per core (XLA
    compiles outside the GIL)."""
    todo = [s for s in dict.fromkeys(shapes) if s not in self._compiled]

    def one(shape):
      ids = jax.ShapeDtypeStruct(shape, np.int32)
      return self._call.lower(self._params, ids, ids, ids).compile()

    if todo:
      with concurrent.futures.ThreadPoolExecutor(min(len(todo), os.cpu_count() or 1)) as pool:
        self._compiled.update(zip(todo, pool.map(one, todo)))

  def run(self, arrays: Mapping[str, np.ndarray], *, strict: bool = False) -> dict:
    """{"outputs", "predictions"} (NumPy) of int32 [B, L] `arrays` (INPUTS). With
    `strict`, a shape that was not compiled up front is an error instead of a compile."""
    args = [np.asarray(arrays[k], np.int32) for k in INPUTS]
    shape = args[0].shape
    fn = self._compiled.get(shape)
    if fn is None:
      if strict:
        raise ArtifactError(f"shape {shape} was not compiled (compiled: {self.compiled_shapes})")
      fn = self._call
    return jax.tree.map(np.asarray, fn(self._params, *args))


def load(directory: str, platform: str | None = None) -> Artifact:
  """The artifact in `directory`, checked to run on `platform` (default: this process's)."""
  manifest = read_manifest(directory)
  platform = platform or current_platform()
  if platform not in manifest.get("platforms", []):
    raise ArtifactError(f"{directory}: exported for {manifest.get('platforms')}, not for this "
                        f"machine's {platform} (re-export with --platforms={platform})")
  try:
    with open(os.path.join(directory, MODULE_FILE), "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
  except (OSError, ValueError) as e:
    raise ArtifactError(f"{os.path.join(directory, MODULE_FILE)}: cannot load ({e}); exported "
                        f"with jax {manifest.get('jax_version')}, this is jax "
                        f"{jax.__version__}") from e
  with np.load(os.path.join(directory, PARAMS_FILE)) as npz:
    params = [jax.device_put(npz[k]) for k in sorted(npz.files)]
  return Artifact(directory, manifest, exported, params)
