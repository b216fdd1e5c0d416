r"""Exports a fine-tuned model (or a pretraining one: its encoder) as a serving artifact.

  python -m launch.export_serving --model_dir=OUT/best_model --output_dir=ART \
      [--format=stablehlo] [--platforms=cpu,cuda,tpu] [--bucket_widths=32,64,128]
  python -m launch.export_serving --model_dir=OUT/best_model --output_dir=ART_ONNX \
      --format=onnx [--quantize]

stablehlo: jax.export of the task's model and its `predict`, symbolic batch and
sequence, for each platform asked for (none needs to be present); runs with jax alone
(bert_jax/serving/runtime.py) and is what `launch.serve --artifact` serves.
onnx: the transformers model the directory already is, through torch.onnx (dynamic
batch and sequence axes), checked against PyTorch in onnxruntime; --quantize adds
int8 dynamic quantisation (model.int8.onnx). Both write the tokenizer files and
manifest.json beside the model. (launch.export exports a pretraining run to a
transformers directory; this one starts from such a directory.)
"""
from absl import app
from absl import flags

from launch import cli

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A fine-tuned model directory "
                                 "(OUT/best_model) or a pretraining one (encoder only).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Artifact directory to create (must not "
                                  "exist, or be empty).")
_FORMAT = flags.DEFINE_enum("format", "stablehlo", ["stablehlo", "onnx"], "Artifact format.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu"], "stablehlo: platforms to lower for "
                               "(cpu, cuda, tpu).")
_WIDTHS = flags.DEFINE_list("bucket_widths", None, "Sequence widths the service compiles and "
                            "pads to (default: 16, 24, 32, 48, 64, 96, ... up to max_seq_length).")
_QUANTIZE = flags.DEFINE_bool("quantize", False, "onnx: also write model.int8.onnx (int8 "
                              "dynamic quantisation of the weights).")
flags.mark_flags_as_required(["model_dir", "output_dir"])


def _widths(values):
  if values is None:
    return None
  try:
    return [int(v) for v in values]
  except ValueError as e:
    raise ValueError(f"--bucket_widths={','.join(values)}: expected integers") from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _FORMAT.value == "stablehlo":
    from bert_jax.serving import export_artifact  # pylint: disable=import-outside-toplevel
    manifest = export_artifact.export(_MODEL_DIR.value, _OUTPUT_DIR.value,
                                      platforms=_PLATFORMS.value,
                                      bucket_widths=_widths(_WIDTHS.value))
  else:
    from bert_jax.serving import onnx_export  # pylint: disable=import-outside-toplevel
    manifest = onnx_export.export(_MODEL_DIR.value, _OUTPUT_DIR.value, quantize=_QUANTIZE.value,
                                  bucket_widths=_widths(_WIDTHS.value))
  print(f"exported {manifest['task']} model {_MODEL_DIR.value} to {_OUTPUT_DIR.value} "
        f"({manifest['format']}, platforms {','.join(manifest['platforms'])})", flush=True)


if __name__ == "__main__":
  cli.run(main)
