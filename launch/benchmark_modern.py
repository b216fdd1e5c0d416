r"""The modern encoder on the CPU: a local and a global layer against the sequence length
(time and memory), and our encoder stack against transformers' ModernBertModel.

  python -m launch.benchmark_modern --mode=layers \
      --config=bert_jax/configs/modernbert_base.py --max_seq_lengths=1024,2048,4096,8192
  python -m launch.benchmark_modern --mode=stack \
      --config=bert_jax/configs/modernbert_base.py --max_seq_lengths=512

Prints a Markdown table (layers) or one line per length (stack). The model is the
config's (`--config.model.FIELD=VALUE` overrides it, e.g.
`--config.model.num_hidden_layers=6`), in float32.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from bert_jax import model as model_lib
from bert_jax import modern_benchmark
from launch import cli

_MODE = flags.DEFINE_enum("mode", "layers", ["layers", "stack"], "What to measure.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "bert_jax/configs/modernbert_base.py", "Config file whose model is measured.",
    lock_config=True)
_SEQ = flags.DEFINE_list("max_seq_lengths", ["1024", "2048", "4096", "8192"],
                         "Sequence lengths, one row each.")
_BATCH = flags.DEFINE_integer("batch_size", 1, "Rows per forward pass (stack mode).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (the median is printed).")


def _config():
  return model_lib.BertConfig(**{**_CONFIG.value.model.to_dict(), "dtype": "float32"})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    seq_lens = [int(s) for s in _SEQ.value]
  except ValueError as e:
    raise ValueError(f"--max_seq_lengths={','.join(_SEQ.value)}: not integers") from e
  config = _config()
  if max(seq_lens) > config.max_position_embeddings:
    raise ValueError(f"--max_seq_lengths: {max(seq_lens)} exceeds max_position_embeddings="
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
