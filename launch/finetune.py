r"""Fine-tunes a BERT checkpoint for classification, regression or NER; calls `finetune.run`.

  python -m launch.finetune --task=classification --init_from=HF_BERT_DIR \
      --train_file=train.tsv --eval_file=dev.tsv --text_column=sentence \
      --label_column=label --output_dir=/tmp/sst2
  python -m launch.finetune --task=ner --init_from=HF_BERT_DIR --train_file=train.conll \
      --eval_file=dev.conll --output_dir=/tmp/ner --lora_rank=8
  python -m launch.finetune --task=classification --init_from=/tmp/sst2/best_model \
      --predict_file=test.tsv --output_dir=/tmp/sst2-test       # label new input

Prints the final metrics as one JSON line; see bert_jax/finetune.py for the files written.
"""
import json

from absl import app
from absl import flags
from absl import logging

from bert_jax import finetune
from launch import cli

_D = finetune.FinetuneConfig
_TASK = flags.DEFINE_enum("task", None, list(finetune.TASKS), "What to fine-tune for.")
_INIT_FROM = flags.DEFINE_string(
    "init_from", None, "Hugging Face BERT directory: config.json, model.safetensors or "
    "pytorch_model.bin, and vocab.txt (or a SentencePiece .model).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the best model, metrics and "
                                  "predictions go.")
_TRAIN = flags.DEFINE_string("train_file", None, "CSV/TSV/JSONL, or CoNLL/JSONL for NER.")
_EVAL = flags.DEFINE_string("eval_file", None, "Labelled evaluation file (same format).")
_PREDICT = flags.DEFINE_string("predict_file", None, "Unlabelled input to label.")
_TEXT = flags.DEFINE_string("text_column", _D.text_column, "Column of the (first) text.")
_PAIR = flags.DEFINE_string("text_pair_column", None, "Column of the second text, for pairs.")
_LABEL = flags.DEFINE_string("label_column", _D.label_column, "Column of the label.")
_TOKENS_KEY = flags.DEFINE_string("tokens_key", _D.tokens_key, "NER JSONL: key of the tokens.")
_TAGS_KEY = flags.DEFINE_string("tags_key", _D.tags_key, "NER JSONL: key of the tags.")
_LABELS = flags.DEFINE_list("labels", None, "The label set, in id order (default: the sorted "
                            "labels of the train file).")
_MAX_LEN = flags.DEFINE_integer("max_seq_length", _D.max_seq_length, "Tokens per sequence.")
_BATCH = flags.DEFINE_integer("batch_size", _D.batch_size, "Global training batch size.")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch_size", _D.eval_batch_size, "Global eval batch.")
_LR = flags.DEFINE_float("learning_rate", _D.learning_rate, "Peak learning rate (BERT: 2e-5 to "
                         "5e-5; LoRA usually wants ~1e-4 to 1e-3).")
_EPOCHS = flags.DEFINE_integer("num_epochs", _D.num_epochs, "Training epochs.")
_WARMUP = flags.DEFINE_float("warmup_fraction", _D.warmup_fraction, "Warmup share of the steps.")
_WD = flags.DEFINE_float("weight_decay", _D.weight_decay, "AdamW weight decay.")
_LORA_RANK = flags.DEFINE_integer("lora_rank", _D.lora_rank, "LoRA rank; 0 = full fine-tuning.")
_LORA_ALPHA = flags.DEFINE_float("lora_alpha", _D.lora_alpha, "LoRA scale numerator "
                                 "(scale = alpha / rank).")
_BEST = flags.DEFINE_string("metric_for_best", None, "Eval metric that picks the best epoch.")
_MESH = flags.DEFINE_list("mesh_shape", ["-1", "1", "1"], "data,fsdp,tensor mesh shape.")
_DTYPE = flags.DEFINE_enum("dtype", _D.dtype, ["float32", "bfloat16"], "Compute dtype.")
_SEED = flags.DEFINE_integer("seed", _D.seed, "Seed of the head init, order and dropout.")
_LOG_EVERY = flags.DEFINE_integer("log_every_steps", _D.log_every_steps, "Progress interval.")
flags.mark_flags_as_required(["task", "init_from", "output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config = finetune.FinetuneConfig(
      task=_TASK.value, init_from=_INIT_FROM.value, output_dir=_OUTPUT_DIR.value,
      train_file=_TRAIN.value, eval_file=_EVAL.value, predict_file=_PREDICT.value,
      text_column=_TEXT.value, text_pair_column=_PAIR.value, label_column=_LABEL.value,
      tokens_key=_TOKENS_KEY.value, tags_key=_TAGS_KEY.value,
      labels=tuple(_LABELS.value) if _LABELS.value else None,
      max_seq_length=_MAX_LEN.value, batch_size=_BATCH.value,
      eval_batch_size=_EVAL_BATCH.value, learning_rate=_LR.value, num_epochs=_EPOCHS.value,
      warmup_fraction=_WARMUP.value, weight_decay=_WD.value, lora_rank=_LORA_RANK.value,
      lora_alpha=_LORA_ALPHA.value, metric_for_best=_BEST.value,
      mesh_shape=tuple(int(s) for s in _MESH.value), dtype=_DTYPE.value, seed=_SEED.value,
      log_every_steps=_LOG_EVERY.value)
  results = finetune.run(config)
  print(json.dumps({k: v for k, v in results.items() if k != "history"}, sort_keys=True),
        flush=True)


if __name__ == "__main__":
  cli.run(main)
