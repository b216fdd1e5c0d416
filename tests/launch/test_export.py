"""launch.export: a checkpoint saved on an 8-device mesh -> a directory transformers
loads as it is; same token ids, same MLM and NSP logits (fp32, within 1e-4)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import pretrain as pretrain_testlib
from bert_jax.checkpointing import manager as ckpt
from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import partitioning
from bert_jax import train
from data_pipeline.text import tokenizer as tokenizers
from launch import export as export_lib

from tests.helpers import REPO
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A checkpoint is only worth what it does downstream.",
    "Pretraining teaches the model which words fit where.",
    "The dog sleeps, and the fox runs away!",
]


def _write_vocab(path, size=512):
  """Specials, the words of SENTENCES, letters and ##letters (so every word splits)."""
  words = sorted({w.strip(".,!").lower() for s in SENTENCES for w in s.split()})
  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
  tokens = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(".,!'") + letters
            + ["##" + c for c in letters] + words)
  tokens += [f"[unused{i}]" for i in range(size - len(tokens))]
  with open(path, "w") as f:
    f.write("\n".join(tokens) + "\n")
  return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir whose checkpoints (steps 3 and 6) were saved on all 8 devices (fsdp=8),
  recording a WordPiece tokenizer in its data directory."""
  root = tmp_path_factory.mktemp("export")
  data_dir = root / "data"
  data_dir.mkdir()
  tokenizer = tokenizers.load_tokenizer(_write_vocab(str(data_dir / "vocab.txt")), lowercase=True)
  config = pretrain_testlib.small_config()
  mesh = partitioning.make_mesh((1, -1, 1))
  model = model_lib.BertForPreTraining(train.model_config_from(config))
  tx, _ = optim.optimizer_from_config(config)
  state = train.create_train_state(config, model, tx, mesh)[0]
  # Not a fresh init (LayerNorm scales of exactly 1, zero biases would hide mix-ups).
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: (x + 0.02 * rng.standard_normal(x.shape)).astype(x.dtype),
                        jax.device_get(state.params))
  state = state.replace(params=jax.device_put(params, jax.tree.map(lambda a: a.sharding,
                                                                    state.params)))
  meta = {"config": json.loads(config.to_json_best_effort()), "tokenizer": tokenizer.describe(),
          "data_dir": str(data_dir), "tokenizer_file": "vocab.txt"}
  checkpointer = ckpt.Checkpointer(str(root / "run" / ckpt.CHECKPOINTS_SUBDIR))
  checkpointer.save(3, state.replace(params=jax.tree.map(lambda x: x * 0, state.params)),
                    meta=meta, data_state={})
  checkpointer.save(6, state, meta=meta, data_state={})
  checkpointer.close()
  return str(root / "run"), tokenizer, model.config, params


def _ours(config, params, input_ids, token_type_ids, attention_mask):
  mlm, nsp = model_lib.BertForPreTraining(config).apply(
      {"params": params}, input_ids, token_type_ids, attention_mask, None, deterministic=True)
  return np.asarray(mlm), np.asarray(nsp)


def test_transformers_loads_the_export_with_equal_ids_and_logits(workdir, tmp_path):
  import torch
  from transformers import AutoModelForPreTraining, AutoTokenizer
  run, tokenizer, config, params = workdir
  out = str(tmp_path / "hf")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "launch.export", f"--workdir={run}", f"--output_dir={out}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"exported {run}/checkpoints/6 to {out}" in result.stdout
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json",
                                     "tokenizer_config.json", "vocab.txt"]

  hf_tokenizer = AutoTokenizer.from_pretrained(out)
  hf_model = AutoModelForPreTraining.from_pretrained(out).eval()
  for a, b in zip(SENTENCES[::2], SENTENCES[1::2]):
    ids_a, ids_b = tokenizer.encode(a), tokenizer.encode(b)
    assert tokenizer.unk_id not in ids_a + ids_b
    enc = hf_tokenizer(a, b, return_tensors="pt")
    ours_ids = [tokenizer.cls_id] + ids_a + [tokenizer.sep_id] + ids_b + [tokenizer.sep_id]
    assert enc["input_ids"][0].tolist() == ours_ids
    with torch.no_grad():
      theirs = hf_model(**enc)
    mlm, nsp = _ours(config, params, enc["input_ids"].numpy(), enc["token_type_ids"].numpy(),
                     enc["attention_mask"].numpy())
    mlm_diff = np.abs(theirs.prediction_logits.numpy() - mlm).max()
    nsp_diff = np.abs(theirs.seq_relationship_logits.numpy() - nsp).max()
    print(f"\nmax |logit difference|: MLM {mlm_diff:.2e}, NSP {nsp_diff:.2e}")
    assert mlm_diff < 1e-4 and nsp_diff < 1e-4
    assert np.abs(nsp).max() > 1e-3  # the comparison is not of zeros


def test_export_of_a_chosen_step(workdir, tmp_path):
  from safetensors.numpy import load_file
  run, _, _, _ = workdir
  export_lib.export(run, str(tmp_path / "step3"), step=3)
  weights = load_file(str(tmp_path / "step3" / "model.safetensors"))
  assert not np.any(weights["bert.embeddings.word_embeddings.weight"])  # step 3 held zeros
  with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint of step 4; available: \[3, 6\]"):
    export_lib.export(run, str(tmp_path / "step4"), step=4)
  assert not os.path.exists(tmp_path / "step4")


def test_export_refuses_to_write_over_or_with_another_tokenizer(workdir, tmp_path):
  run, _, _, _ = workdir
  taken = tmp_path / "taken"
  taken.mkdir()
  (taken / "keep.txt").write_text("x")
  with pytest.raises(ValueError, match="exists and is not empty"):
    export_lib.export(run, str(taken))
  assert os.listdir(taken) == ["keep.txt"]

  other_vocab = _write_vocab(str(tmp_path / "vocab.txt"), size=600)
  with pytest.raises(ValueError, match="is not the one the checkpoint was trained with"):
    export_lib.export(run, str(tmp_path / "out"), tokenizer_path=other_vocab)
  # Nothing half-written that looks complete: neither OUT nor its temporary directory.
  assert sorted(os.listdir(tmp_path)) == ["taken", "vocab.txt"]


def test_an_export_failing_half_way_leaves_nothing(workdir, tmp_path, monkeypatch):
  from data_pipeline.text import hf_tokenizer
  run, _, _, _ = workdir

  def fail(*args, **kwargs):
    raise OSError("disk full")

  # The weights are written by then; the tokenizer files fail.
  monkeypatch.setattr(hf_tokenizer, "export_tokenizer", fail)
  with pytest.raises(OSError, match="disk full"):
    export_lib.export(run, str(tmp_path / "out"))
  assert os.listdir(tmp_path) == []
