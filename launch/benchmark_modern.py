r"""The modern encoder on the CPU: a local and a global layer against the sequence length
(time and memory), and our encoder stack against transformers' ModernBertModel.

  python -m launch.benchmark_modern --mode=layers --preset=modernbert-base \
      --seq_lens=1024,2048,4096,8192
  python -m launch.benchmark_modern --mode=stack --preset=modernbert-base --seq_lens=512

Prints a Markdown table (layers) or one line per length (stack). Model fields can be
changed with --override=name=value (e.g. --override=num_hidden_layers=6).
"""
import ast

from absl import app
from absl import flags

from bert_jax import model as model_lib
from bert_jax import modern_benchmark
from launch import cli

_MODE = flags.DEFINE_enum("mode", "layers", ["layers", "stack"], "What to measure.")
_PRESET = flags.DEFINE_enum("preset", "modernbert-base", list(model_lib.MODERN_PRESETS),
                            "Modern preset whose shapes are measured.")
_SEQ = flags.DEFINE_list("seq_lens", ["1024", "2048", "4096", "8192"], "Sequence lengths.")
_BATCH = flags.DEFINE_integer("batch_size", 1, "Rows per forward pass (stack mode).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (the median is printed).")
_OVERRIDE = flags.DEFINE_multi_string("override", [], "Model field overrides, name=value.")


def _config():
  overrides = {}
  for item in _OVERRIDE.value:
    name, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--override={item!r}: expected name=value")
    try:
      overrides[name] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[name] = value
  return model_lib.modern_config(_PRESET.value, dtype="float32", **overrides)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    seq_lens = [int(s) for s in _SEQ.value]
  except ValueError as e:
    raise ValueError(f"--seq_lens={','.join(_SEQ.value)}: not integers") from e
  config = _config()
  if max(seq_lens) > config.max_position_embeddings:
    raise ValueError(f"--seq_lens: {max(seq_lens)} exceeds max_position_embeddings="
                     f"{config.max_position_embeddings}")
  if _MODE.value == "layers":
    rows = modern_benchmark.layer_scaling(config, seq_lens, repeats=_REPEATS.value)
    print(modern_benchmark.scaling_table(rows), flush=True)
    return
  for n in seq_lens:
    ours = modern_benchmark.time_stack_ours(config, _BATCH.value, n, _REPEATS.value)
    theirs = modern_benchmark.time_stack_transformers(config, _BATCH.value, n, _REPEATS.value)
    print(f"batch {_BATCH.value} x {n} tokens, {config.num_hidden_layers} layers: bert-jax "
          f"{ours * 1e3:.0f} ms, transformers (PyTorch, sdpa) {theirs * 1e3:.0f} ms per forward",
          flush=True)


if __name__ == "__main__":
  cli.run(main)
