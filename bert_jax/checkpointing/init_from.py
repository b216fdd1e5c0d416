"""Parameters from elsewhere: one of our checkpoints or a Hugging Face BERT directory.

`load` is what `config.init_from` does (parameters only, onto this run's shardings;
the precedence that calls it is `manager.restore_or_initialize`); `read_checkpoint`
reads a checkpoint's parameters on the host, whatever mesh saved it (export).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from bert_jax.checkpointing import layout
from bert_jax import interop
from bert_jax import tree as tree_lib


def _is_step_dir(path: str) -> bool:
  return (os.path.isdir(os.path.join(path, layout.STATE))
          and os.path.basename(path.rstrip("/")).isdigit())


def _steps_in(directory: str) -> list[int]:
  return sorted(int(d) for d in os.listdir(directory) if _is_step_dir(os.path.join(directory, d)))


def resolve_our_checkpoint(path: str) -> tuple[str, int] | None:
  """(checkpoints directory, step) for a workdir, a checkpoints/ directory or a step
  directory of ours (the latest step unless a step directory is named); None when
  `path` is none of these."""
  path = os.path.abspath(path)
  if _is_step_dir(path):
    return os.path.dirname(path), int(os.path.basename(path))
  for directory in (os.path.join(path, layout.CHECKPOINTS_SUBDIR), path):
    if os.path.isdir(directory):
      steps = _steps_in(directory)
      if steps:
        return directory, steps[-1]
  return None


def is_hf_directory(path: str) -> bool:
  return os.path.exists(os.path.join(path, interop.CONFIG_NAME))


def _saved_params_metadata(step_dir: str) -> tuple[ocp.PyTreeCheckpointer, Any]:
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(os.path.join(step_dir, layout.STATE))
  return checkpointer, getattr(metadata, "item_metadata", metadata)["params"]


def _restore_params(checkpointer: ocp.PyTreeCheckpointer, step_dir: str, target: Any,
                    restore_args: Any) -> Any:
  """Only the `params` subtree of a state item: the optimizer state of the source
  run may be of another optimizer."""
  restored = checkpointer.restore(os.path.join(step_dir, layout.STATE), args=ocp.args.PyTreeRestore(
      item={"params": target}, restore_args={"params": restore_args}, partial_restore=True))
  return restored["params"]


def load_params(path: str, abstract_params: Any) -> tuple[Any, str]:
  """Parameters of one of our checkpoints, placed on `abstract_params`' shardings.
  Returns (params, the step directory read). Shapes must match."""
  found = resolve_our_checkpoint(path)
  if found is None:
    raise layout.CheckpointError(
        f"{path}: not one of our checkpoints (no {layout.CHECKPOINTS_SUBDIR}/<step>/"
        f"{layout.STATE}) and not a Hugging Face directory (no config.json)")
  step_dir = os.path.join(found[0], str(found[1]))
  try:
    checkpointer, params_meta = _saved_params_metadata(step_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise layout.CheckpointError(
        f"checkpoint {step_dir} cannot be read ({type(e).__name__}: {e})") from e
  lines = layout.mismatches(tree_lib.flatten_with_names(params_meta),
                            tree_lib.flatten_with_names(abstract_params), check_dtype=False)
  if lines:
    raise layout.incompatible_error(
        f"checkpoint {step_dir} (config.init_from)", lines,
        "Set the model fields (--config.model.*) to those of that checkpoint.")
  params = _restore_params(checkpointer, step_dir, abstract_params,
                           ocp.checkpoint_utils.construct_restore_args(abstract_params))
  return params, step_dir


def load_hf_params(path: str, model_config: Any, abstract_params: Any,
                   fresh_params: Any) -> Any:
  """Parameters of a Hugging Face BERT directory on `abstract_params`' shardings.

  Its config.json must describe this run's model (every architecture field equal).
  Groups a bare BertModel lacks (the pretraining heads, the pooler) keep their fresh
  initialisation from `fresh_params`, and are named in a warning.
  """
  runtime = {f: getattr(model_config, f) for f in
             ("dtype", "param_dtype", "attention_impl", "remat_policy", "scan_layers")}
  hf_config, params, report = interop.load_hf_with_report(path, **runtime)
  different = [f"{f}: {path} has {getattr(hf_config, f)!r}, this run {getattr(model_config, f)!r}"
               for f in interop.CONFIG_FIELDS
               if getattr(hf_config, f) != getattr(model_config, f)
               and not f.endswith("dropout_prob")]
  if different:
    raise layout.IncompatibleCheckpointError(
        f"{path}/config.json does not describe this run's model ({len(different)} field(s)):\n  "
        + "\n  ".join(different) + "\nSet --config.model.* to the checkpoint's values.")
  loaded = tree_lib.flatten_with_names(params)
  expected = tree_lib.flatten_with_names(abstract_params)
  lines = [line for line in layout.mismatches(loaded, expected, check_dtype=False)
           if "missing from the checkpoint" not in line]
  if lines:
    raise layout.incompatible_error(f"{path} (config.init_from)", lines, "")
  if report.absent:
    logging.warning("%s: absent from the checkpoint, freshly initialised: %s", path,
                    ", ".join(report.absent))
    print(f"init_from {path}: {', '.join(report.absent)} absent there, freshly initialised",
          flush=True)
  fresh = tree_lib.flatten_with_names(fresh_params)
  shardings = tree_lib.flatten_with_names(jax.tree.map(lambda a: a.sharding, abstract_params))
  merged = {name: (jax.device_put(np.asarray(loaded[name], dtype=expected[name].dtype),
                                  shardings[name]) if name in loaded else fresh[name])
            for name in expected}
  treedef = jax.tree.structure(abstract_params)
  return jax.tree.unflatten(treedef, [merged[n] for n in expected])


def load(path: str, model_config: Any, abstract_params: Any, fresh_params: Any
         ) -> tuple[Any, str]:
  """`config.init_from`: (parameters on `abstract_params`' shardings, what was read),
  from a Hugging Face directory or one of our checkpoints."""
  if is_hf_directory(path):
    return load_hf_params(path, model_config, abstract_params, fresh_params), path
  return load_params(path, abstract_params)


def read_checkpoint(path: str, step: int | None = None) -> tuple[str, dict, Any]:
  """(step directory, meta, params as host NumPy arrays) of one of our checkpoints.

  `path` is a workdir, its checkpoints/ directory or a step directory; `step`
  picks one (default: the latest). Reads on the host, so a checkpoint saved on any
  mesh (or any number of hosts) loads here.
  """
  found = resolve_our_checkpoint(path)
  if found is None:
    raise layout.CheckpointError(f"{path}: no checkpoint found (expected "
                                 f"{layout.CHECKPOINTS_SUBDIR}/<step>/{layout.STATE})")
  directory, latest = found
  step = latest if step is None else int(step)
  step_dir = os.path.join(directory, str(step))
  if not _is_step_dir(step_dir):
    raise layout.CheckpointError(f"{directory}: no checkpoint of step {step}; available: "
                                 f"{_steps_in(directory)}")
  try:
    with open(os.path.join(step_dir, layout.META, "metadata")) as f:
      meta = json.load(f)
    checkpointer, params_meta = _saved_params_metadata(step_dir)
    params = _restore_params(checkpointer, step_dir, params_meta, jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta))
  except Exception as e:  # pylint: disable=broad-except
    raise layout.CheckpointError(f"checkpoint {step_dir} cannot be read ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''})") from e
  return step_dir, meta, params
