"""Tiny Hugging Face BERT directories and small learnable tasks for the fine-tuning tests."""
import json
import os

import jax
import numpy as np

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import tree as tree_lib

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "nice"]
NEGATIVE = ["bad", "awful", "poor", "sad"]
PEOPLE = ["john", "mary", "smith"]
PLACES = ["paris", "rome", "oslo"]
FILLER = [f"w{i}" for i in range(40)]
WORDS = POSITIVE + NEGATIVE + PEOPLE + PLACES + FILLER + ["##ian", "##s"]


def tiny_config(vocab_size):
  return model_lib.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=64)


def make_hf_dir(directory, seed=0):
  """A random tiny BertForPreTraining saved as transformers does, with a vocab.txt."""
  vocab = SPECIALS + WORDS
  config = tiny_config(len(vocab))
  model = model_lib.BertForPreTraining(config)
  params = model.init(jax.random.PRNGKey(seed), **model_lib.dummy_inputs(config))["params"]
  interop.save_hf(config, jax.tree.map(np.asarray, model_lib.nn.unbox(params)), directory)
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(vocab) + "\n")
  return directory


def param_shapes(module, inputs):
  """`module`'s parameter tree as shapes (nothing computed, nothing compiled)."""
  return model_lib.nn.unbox(jax.eval_shape(
      lambda rng: module.init(rng, **inputs), jax.random.PRNGKey(0))["params"])


def random_hf_dir(directory, vocab=None, seed=0):
  """Like `make_hf_dir` (a tiny random BertForPreTraining; `vocab` defaults to the test
  words), but drawn in NumPy: compiling Flax's initialisers on a 2-core CPU costs more
  than the training this directory is for."""
  vocab = vocab or SPECIALS + WORDS
  config = tiny_config(len(vocab))
  shapes = param_shapes(model_lib.BertForPreTraining(config), model_lib.dummy_inputs(config))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1] in ("scale", "bias"):
      return (np.ones if path[-1] == "scale" else np.zeros)(leaf.shape, np.float32)
    return (rng.standard_normal(leaf.shape) * config.initializer_range).astype(np.float32)

  interop.save_hf(config, tree_lib.unflatten({p: draw(p, x) for p, x in
                                              tree_lib.flatten(shapes).items()}), directory)
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  return directory


def numpy_params(module, config, seed, scale=0.05):
  """Random parameters of `module` (a task model of `config`), drawn in NumPy: normal
  with `scale`, LayerNorm scales around 1. Compiling Flax's initialisers costs more CPU
  time than the parity tests that use these."""
  shapes = param_shapes(module, model_lib.dummy_inputs(config, 1, 8, None))
  rng = np.random.default_rng(seed)
  flat = {path: (rng.standard_normal(x.shape) * scale + (path[-1] == "scale")).astype(np.float32)
          for path, x in tree_lib.flatten(shapes).items()}
  return tree_lib.unflatten(flat)


def sentiment_rows(n, seed):
  """One sentiment word among 3-8 fillers; the label is that word's polarity."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(n):
    words = list(rng.choice(FILLER, size=int(rng.integers(3, 9))))
    positive = bool(rng.integers(2))
    words.insert(int(rng.integers(len(words) + 1)),
                 str(rng.choice(POSITIVE if positive else NEGATIVE)))
    rows.append((" ".join(words), "pos" if positive else "neg"))
  return rows


def write_tsv(path, rows, header=("sentence", "label")):
  with open(path, "w") as f:
    f.write("\t".join(header) + "\n")
    for row in rows:
      f.write("\t".join(row) + "\n")
  return path


def ner_sentences(n, seed):
  """Fillers with people (B-PER, two-word names B-PER I-PER) and places (B-LOC; 'parisian'
  is split into sub-tokens and tagged B-MISC on its first)."""
  rng = np.random.default_rng(seed)
  sentences = []
  for _ in range(n):
    tokens, tags = [], []
    for _ in range(int(rng.integers(4, 10))):
      r = rng.random()
      if r < 0.15:
        tokens += ["john", "smith"]
        tags += ["B-PER", "I-PER"]
      elif r < 0.25:
        tokens.append(str(rng.choice(PEOPLE[:2])))
        tags.append("B-PER")
      elif r < 0.4:
        tokens.append(str(rng.choice(PLACES)))
        tags.append("B-LOC")
      elif r < 0.45:
        tokens.append("parisian")
        tags.append("B-MISC")
      else:
        tokens.append(str(rng.choice(FILLER)))
        tags.append("O")
    sentences.append((tokens, tags))
  return sentences


def write_conll(path, sentences, with_tags=True):
  with open(path, "w") as f:
    for tokens, tags in sentences:
      for tok, tag in zip(tokens, tags):
        f.write(f"{tok} {tag}\n" if with_tags else f"{tok}\n")
      f.write("\n")
  return path


def read_json(path):
  with open(path) as f:
    return json.load(f)


def run(cfg, all_devices=False):
  """`finetune.run` with the task's text side, as launch.finetune calls it, on one device
  unless `all_devices` (the 8 test devices, data parallel as a user's run is). Eight
  simulated devices on a 2-core machine compile a partitioned program and run 8 shards
  with their collectives for every step, which doubles a tiny run's time; the tests about
  the mesh ask for it."""
  from bert_jax.finetune import loop as finetune
  from data_pipeline.finetune import tasks as text_tasks
  from tests.helpers.pretrain import one_device_mesh
  return finetune.run(cfg, text_tasks.make_text_task(cfg.task, **cfg.text_options()),
                      mesh=None if all_devices else one_device_mesh())
