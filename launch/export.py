r"""Exports a pretraining checkpoint as a Hugging Face transformers directory.

  python -m launch.export --workdir=/tmp/bert-tiny --output_dir=/tmp/bert-tiny-hf [--step=N]

OUT holds config.json and model.safetensors (`BertForPreTraining` names) and the
tokenizer files (vocab.txt for WordPiece; tokenizer.json for SentencePiece), so
`transformers.AutoModelForPreTraining.from_pretrained(OUT)` and
`AutoTokenizer.from_pretrained(OUT)` load it as it is. Any step, saved on any mesh.

The tokenizer is the one the checkpoint records (its identity is checked); pass
--tokenizer=PATH if the prepared data directory has moved. Everything is written
into a temporary directory beside OUT and renamed at the end: an interrupted
export never leaves a directory that looks complete.
"""
import os
import shutil
import sys

from absl import app
from absl import flags

from bert_jax.checkpointing import init_from
from bert_jax import interop
from bert_jax import model as model_lib
from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A pretraining workdir (or checkpoints/ or a "
                               "step directory).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to create (must not exist, "
                                  "or be empty).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer file or directory, if not where "
                                 "the checkpoint's data directory says.")
flags.mark_flags_as_required(["workdir", "output_dir"])


def find_tokenizer(meta: dict, override: str | None):
  """The run's tokenizer, checked against the identity the checkpoint recorded; None
  for runs on synthetic data (they have none)."""
  from data_pipeline.text import tokenizer as tokenizers  # pylint: disable=import-outside-toplevel
  recorded = meta.get("tokenizer")
  if recorded is None and not override:
    return None
  if override:
    path = override
  elif meta.get("data_dir") and meta.get("tokenizer_file"):
    path = os.path.join(meta["data_dir"], meta["tokenizer_file"])
  else:
    raise ValueError("the checkpoint records a tokenizer but not its file; pass --tokenizer=PATH")
  if not os.path.exists(path):
    raise ValueError(f"tokenizer {path} (recorded by the checkpoint) does not exist; pass "
                     f"--tokenizer=PATH to the tokenizer the run was trained with")
  tokenizer = tokenizers.load_tokenizer(path, lowercase=(recorded or {}).get("lowercase"))
  if recorded is not None and tokenizer.describe()["identity"] != recorded.get("identity"):
    raise ValueError(f"tokenizer {path} is not the one the checkpoint was trained with "
                     f"(identity {tokenizer.describe()['identity']} vs recorded "
                     f"{recorded.get('identity')})")
  return tokenizer


def export(workdir: str, output_dir: str, step: int | None = None,
           tokenizer_path: str | None = None) -> str:
  """Writes the transformers directory; returns the step directory exported."""
  from data_pipeline.text import hf_tokenizer  # pylint: disable=import-outside-toplevel
  output_dir = os.path.abspath(output_dir)
  if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise ValueError(f"--output_dir={output_dir} exists and is not empty; choose a new one")
  step_dir, meta, params = init_from.read_checkpoint(workdir, step)
  config = model_lib.BertConfig(**meta["config"]["model"])
  tokenizer = find_tokenizer(meta, tokenizer_path)
  tmp = f"{output_dir}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    interop.save_hf(config, params, tmp)
    if tokenizer is not None:
      hf_tokenizer.export_tokenizer(tokenizer, tmp,
                                    model_max_length=config.max_position_embeddings)
    if os.path.isdir(output_dir):
      os.rmdir(output_dir)  # empty (checked above); rename needs it gone
    os.rename(tmp, output_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  if tokenizer is None:
    print("the run was trained on synthetic data: no tokenizer files exported", file=sys.stderr)
  return step_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  step_dir = export(_WORKDIR.value, _OUTPUT_DIR.value, _STEP.value, _TOKENIZER.value)
  print(f"exported {step_dir} to {_OUTPUT_DIR.value}", flush=True)


if __name__ == "__main__":
  cli.run(main)
