r"""Fine-tunes a BERT checkpoint for classification, regression, NER or extractive QA;
calls `finetune.run`.

  python -m launch.finetune --task=classification --init_from=HF_BERT_DIR \
      --train_file=train.tsv --eval_file=dev.tsv --text_column=sentence \
      --label_column=label --output_dir=/tmp/sst2
  python -m launch.finetune --task=ner --init_from=HF_BERT_DIR --train_file=train.conll \
      --eval_file=dev.conll --output_dir=/tmp/ner --lora_rank=8
  python -m launch.finetune --task=classification --init_from=/tmp/sst2/best_model \
      --predict_file=test.tsv --output_dir=/tmp/sst2-test       # label new input
  python -m launch.finetune --task=classification --init_from=HF_BERT_DIR \
      --teacher=/tmp/sst2/best_model --distill_alpha=0.5 --distill_temperature=2 \
      --distill_file=unlabelled.tsv --train_file=train.tsv --eval_file=dev.tsv \
      --output_dir=/tmp/sst2-student   # task distillation (docs/distillation.md)
  python -m launch.finetune --task=qa --init_from=HF_BERT_DIR --train_file=train-v2.0.json \
      --eval_file=dev-v2.0.json --output_dir=/tmp/squad2 --version_2_with_negative

Without --train_file, a fine-tuned model directory's recorded task options (finetune.json:
QA windows, columns, labels, max_seq_length, metric) are used where no flag is given; a
line names those taken.

One flag per `finetune_config.FinetuneConfig` field (declared there once, with its help
text). The task's text side comes from `data_pipeline.finetune.tasks`. Prints the final
metrics as one JSON line; see bert_jax/finetune/loop.py for the files written.
"""
import dataclasses
import json
import types
import typing

from absl import app
from absl import flags
from absl import logging

from bert_jax.finetune import loop as finetune
from bert_jax.finetune import config as finetune_config
from bert_jax.finetune import export as finetune_export
from data_pipeline.finetune import tasks as text_tasks
from launch import cli


def _define_flags(config_cls) -> dict[str, flags.FlagHolder]:
  """An absl flag per dataclass field: its type, default and `metadata["help"]`."""
  hints = typing.get_type_hints(config_cls)
  holders = {}
  for field in dataclasses.fields(config_cls):
    kind, meta = hints[field.name], field.metadata
    base = kind
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: flag of X
      base = next(a for a in typing.get_args(kind) if a is not type(None))
    default = field.default
    if "enum" in meta:
      holder = flags.DEFINE_enum(field.name, default, list(meta["enum"]), meta["help"])
    elif typing.get_origin(base) is tuple:
      item = typing.get_args(base)[0]
      holder = flags.DEFINE_list(field.name, None if default is None else [str(v) for v in default],
                                 meta["help"])
      holder.item_type = item
    elif base is bool:
      holder = flags.DEFINE_bool(field.name, default, meta["help"])
    elif base is int:
      holder = flags.DEFINE_integer(field.name, default, meta["help"])
    elif base is float:
      holder = flags.DEFINE_float(field.name, default, meta["help"])
    else:
      holder = flags.DEFINE_string(field.name, default, meta["help"])
    holders[field.name] = holder
  flags.mark_flags_as_required([f.name for f in dataclasses.fields(config_cls)
                                if f.metadata.get("required")])
  return holders


_FLAGS = _define_flags(finetune_config.FinetuneConfig)


def config_from_flags() -> finetune_config.FinetuneConfig:
  values = {}
  for name, holder in _FLAGS.items():
    value = holder.value
    item_type = getattr(holder, "item_type", None)
    if item_type is not None and value is not None:
      value = tuple(item_type(v) for v in value) if value else None
    values[name] = value
  config = finetune_config.FinetuneConfig(**values)
  # Evaluating / predicting with a fine-tuned model: its recorded task options (QA
  # windows, labels, max length, metric) unless a flag says otherwise.
  recorded = (finetune_export.model_options(config.init_from)
              if config.init_from and config.train_file is None else {})
  given = {name for name, holder in _FLAGS.items() if holder.present}
  config, taken = config.with_model_options(recorded, given)
  if taken:
    print(f"options from {config.init_from}/{finetune_export.FINETUNE_META} (give a flag to "
          f"override): " + ", ".join(f"{n}={getattr(config, n)}" for n in taken), flush=True)
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config = config_from_flags()
  text = text_tasks.make_text_task(config.task, **config.text_options())
  results = finetune.run(config, text)
  print(json.dumps({k: v for k, v in results.items() if k != "history"}, sort_keys=True),
        flush=True)


if __name__ == "__main__":
  cli.run(main)
