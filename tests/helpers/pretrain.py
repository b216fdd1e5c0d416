"""Small shared pieces of the pretraining tests (a one-layer CPU config)."""

import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from bert_jax import train
from bert_jax import tree as tree_lib
from bert_jax.configs import tiny
from launch import sources


def small_config(**fields):
  """tiny.py:tiny with one layer (compiles in seconds on a 2-core CPU) and BERT's
  dropout on, which the quickstart preset turns off."""
  c = tiny.get_config("tiny")
  c.model.num_hidden_layers = 1
  c.model.hidden_dropout_prob = 0.1
  c.model.attention_probs_dropout_prob = 0.1
  for k, v in fields.items():
    target = c
    *parents, leaf = k.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = v
  c.lock()
  return c


def run_pretraining(config, workdir, all_devices=False):
  """`train.train_and_evaluate` on the source `config.data` names, as launch.pretrain runs
  it, on one device unless `all_devices` (`config.mesh_shape` over the 8 test devices;
  see helpers/finetune.run for why the others take one)."""
  return train.train_and_evaluate(config, workdir,
                                  sources.make_pretraining_source(config, workdir),
                                  mesh=one_device_mesh() if not all_devices else None)


def one_device_mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                           ("data", "fsdp", "tensor"),
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)


def build(config, mesh):
  """(state, compiled steps) for `config` on `mesh` (the loop's own `train.build`)."""
  setup = train.build(config, mesh)
  return setup.init_state(), setup.steps


def pretrain_command(workdir, data_dir, **overrides):
  """`python -m launch.pretrain` on tiny with one layer, a 512-word vocabulary and batches
  of 8, plus `--config.<name>=<value>` for each override."""
  return ([sys.executable, "-m", "launch.pretrain", "--config=bert_jax/configs/tiny.py:tiny",
           f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
           "--config.model.vocab_size=512", "--config.model.num_hidden_layers=1",
           "--config.global_batch_size=8", "--config.eval_batch_size=8",
           "--config.write_tensorboard=False"]
          + [f"--config.{name}={value}" for name, value in overrides.items()])


def prepare_made_up_corpus(root, *, words, docs, sentences, words_per_sentence, docs_per_shard):
  """A prepared dataset of `docs` documents of made-up words w0..w{words-1} (ids 5.. after
  the BERT specials), each of `sentences` = (lo, hi) sentences of `words_per_sentence` =
  (lo, hi) words (NumPy's integers(lo, hi) ranges; seed 0), under root/data."""

  from data_pipeline import prepare as prepare_lib
  vocab = os.path.join(root, "vocab.txt")
  with open(vocab, "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                      + [f"w{i}" for i in range(words)]) + "\n")
  rng = np.random.default_rng(0)
  corpus = os.path.join(root, "corpus.txt")
  with open(corpus, "w") as f:
    for _ in range(docs):
      for _ in range(int(rng.integers(*sentences))):
        f.write(" ".join(f"w{i}" for i in rng.integers(0, words, int(rng.integers(
            *words_per_sentence)))) + "\n")
      f.write("\n")
  data_dir = os.path.join(root, "data")
  prepare_lib.prepare(data_dir, vocab, inputs=corpus, options=prepare_lib.PrepareOptions(
      eval_fraction=0.2, docs_per_shard=docs_per_shard, progress=False))
  return data_dir


def prepare_resume_corpus(root):
  """The made-up corpus of the resume and multi-process tests: 400 words w0..w399 (ids 5..
  after the BERT specials), 40 documents."""
  return prepare_made_up_corpus(root, words=400, docs=40, sentences=(6, 20),
                                                 words_per_sentence=(3, 15), docs_per_shard=10)


def read_state(step_dir):
  """{name: numpy array} of a checkpoint's train state, read on the host."""
  checkpointer = ocp.PyTreeCheckpointer()
  path = os.path.join(step_dir, "state")
  metadata = checkpointer.metadata(path)
  metadata = getattr(metadata, "item_metadata", metadata)
  restore_args = ocp.checkpoint_utils.construct_restore_args(
      {k: v for k, v in metadata.items()})
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), restore_args)
  tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return tree_lib.flatten_with_names(tree)
