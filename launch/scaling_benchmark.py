r"""Weak scaling over mesh layouts: per-device batch fixed, 1 -> N devices.

  python -m launch.scaling_benchmark --config=bert_jax/configs/tiny.py:tiny \
      --per_device_batch=8 --max_devices=8 --steps=10 [--config.model.hidden_size=128]

Each row runs `launch.benchmark` in a fresh process (the device count is fixed
when jax starts), on the CPU with `--xla_force_host_platform_device_count=N`
unless --backend says otherwise, and prints a Markdown table: step time, and
its overhead against the one-device step. On the CPU the simulated devices
share the host's cores, so the overhead mixes core contention with the
communication and resharding each layout adds; compare layouts at the same
device count, which share the contention. `--config.FIELD=VALUE` overrides are checked
here and passed on to every row; the tiny variant gets 8 attention heads unless one says
otherwise, so that a tensor axis of 8 divides them.
"""
import json
import os
import subprocess
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", "bert_jax/configs/tiny.py:tiny",
                                          "Config file[:variant].", lock_config=True)
_PER_DEVICE = flags.DEFINE_integer("per_device_batch", 8, "Sequences per device (fixed).")
_MAX_DEVICES = flags.DEFINE_integer("max_devices", 8, "Largest device count (a power of 2).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per row.")
_SEQ = flags.DEFINE_integer("max_seq_length", None, "Sequence length (default: the config's).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the rows as JSON lines here.")
_DEFAULT_OVERRIDES = ("--config.model.num_attention_heads=8",)


def _overrides(argv) -> list[str]:
  """This command line's --config.FIELD=VALUE arguments (after the defaults: the last wins)."""
  return list(_DEFAULT_OVERRIDES) + [a for a in argv[1:] if a.startswith(("--config.", "-config."))]


def layouts(max_devices: int):
  """(devices, mesh_shape) rows: data-only, fsdp-only, tensor-only and mixed meshes."""
  rows = [(1, (1, 1, 1))]
  n = 2
  while n <= max_devices:
    rows += [(n, (n, 1, 1)), (n, (1, n, 1)), (n, (1, 1, n))]
    if n >= 8:
      rows.append((n, (2, n // 4, 2)))
    n *= 2
  return rows


def run_row(devices: int, mesh_shape, overrides: list[str]) -> dict:
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  command = [sys.executable, "-m", "launch.benchmark", f"--config={config_flags.get_config_filename(flags.FLAGS['config'])}",
             f"--batch_size={_PER_DEVICE.value * devices}", f"--steps={_STEPS.value}",
             f"--config.mesh_shape={tuple(mesh_shape)}"]
  if _SEQ.value:
    command.append(f"--max_seq_length={_SEQ.value}")
  command += overrides
  out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
  if out.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  rows, base = [], None
  print("| devices | mesh (data, fsdp, tensor) | global batch | step time (ms) | overhead vs 1 device |")
  print("|---|---|---|---|---|")
  for devices, mesh_shape in layouts(_MAX_DEVICES.value):
    result = run_row(devices, mesh_shape, _overrides(sys.argv))
    base = base or result["step_time_s"]
    result["overhead"] = result["step_time_s"] / base
    rows.append(result)
    print(f"| {devices} | {mesh_shape} | {result['batch_size']} | {1e3 * result['step_time_s']:.1f} "
          f"| {result['overhead']:.2f}x |", flush=True)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
  cli.run(main)
