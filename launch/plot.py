"""Draws WORKDIR/metrics.jsonl as WORKDIR/curves.png (or --out).

  python -m launch.plot /tmp/bert-tiny
"""
from absl import app
from absl import flags

from bert_jax import metrics
from launch import cli

_OUT = flags.DEFINE_string("out", None, "PNG path (default WORKDIR/curves.png).")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m launch.plot WORKDIR [--out=PNG]")
  print(metrics.plot_curves(argv[1], _OUT.value))


if __name__ == "__main__":
  cli.run(main)
