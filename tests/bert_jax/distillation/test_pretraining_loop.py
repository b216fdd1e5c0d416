"""General distillation through the pretraining loop: the step, the teacher's isolation,
layer initialisation, exact resume, bad input and the student's export.

Tiny models (H64, vocab 512, seq 32) on synthetic batches; teachers are Hugging Face
directories written by `interop.save_hf` from random inits (2 layers; a student of 1).
"""
import glob
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax import interop
from bert_jax import model as model_lib
from bert_jax import partitioning
from bert_jax import synthetic
from bert_jax import train
from bert_jax import tree as tree_lib
from bert_jax.checkpointing import manager as ckpt
from bert_jax.checkpointing import layout
from bert_jax.distillation import internals
from bert_jax.distillation import loop as distill_lib
from bert_jax.distillation import losses
from bert_jax.multihost import job_failure
from tests.helpers import pretrain as pretrain_testlib


def _config(**fields):
  return pretrain_testlib.small_config(**{"data.synthetic": True, "write_tensorboard": False,
                                          **fields})


def _teacher_dir(root, seed=0, layers=2, **overrides):
  """A random BertForPreTraining of the tiny preset's shape saved as a HF directory."""
  c = _config()
  fields = {**c.model.to_dict(), "num_hidden_layers": layers, **overrides}
  config = model_lib.BertConfig(**fields)
  params = nn.unbox(model_lib.BertForPreTraining(config).init(
      jax.random.PRNGKey(seed), **model_lib.dummy_inputs(config))["params"])
  rng = np.random.default_rng(seed)  # not a fresh init: unit LayerNorms would hide mix-ups
  params = jax.tree.map(lambda x: np.asarray(x + 0.02 * rng.standard_normal(x.shape), x.dtype),
                        jax.device_get(params))
  path = os.path.join(str(root), f"teacher{seed}_{layers}")
  interop.save_hf(config, params, path)
  return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  return _teacher_dir(tmp_path_factory.mktemp("teachers"))


def _batch(config, seed=1):
  return synthetic.synthetic_batch(np.random.default_rng(seed), config.global_batch_size,
                                   config.max_seq_length, config.max_predictions_per_seq,
                                   config.model.vocab_size)


def _step(setup, batch):
  state = setup.init_state()
  return setup.steps.train(state, partitioning.host_to_device(batch, setup.mesh))


def test_hard_terms_alone_are_the_plain_step(teacher):
  mesh = pretrain_testlib.one_device_mesh()
  plain = train.build(_config(), mesh)
  distill = train.build(_config(**{"distill.teacher": teacher, "distill.mlm_soft": 0.0}), mesh)
  batch = _batch(plain.config)
  state_p, metrics_p = _step(plain, batch)
  state_d, metrics_d = _step(distill, batch)
  assert float(metrics_d["loss"]) == float(metrics_p["loss"])
  assert float(metrics_d["distill_mlm_hard"]) == float(metrics_p["mlm_loss"])
  for a, b in zip(jax.tree.leaves(state_p.params), jax.tree.leaves(state_d.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_soft_terms_are_the_losses_of_the_same_forward(teacher):
  mesh = pretrain_testlib.one_device_mesh()
  weights = {"distill.mlm_soft": 1.0, "distill.nsp_soft": 0.5, "distill.hidden_cosine": 2.0,
             "distill.minilm": 0.25, "distill.temperature": 3.0}
  # No dropout, so the step's forward is the deterministic one computed here; two
  # micro-batches, so the global normalisation of the accumulation is checked too.
  config = _config(**{"distill.teacher": teacher, **weights, "num_micro_batches": 2,
                      "model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0})
  setup = train.build(config, mesh)
  batch = _batch(config)
  params = jax.device_get(setup.init_state().params)
  _, metrics = _step(setup, batch)
  run = setup.distill
  args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
          batch["masked_lm_positions"])
  (s_mlm, s_nsp), s_int = internals.apply_with_internals(
      setup.model, params, *args, config=setup.model.config, want_qkv=True, deterministic=True)
  (t_mlm, t_nsp), t_int = internals.apply_with_internals(
      run.model, jax.device_get(run.params), *args, config=run.model.config, want_qkv=True,
      deterministic=True)
  tokens = batch["attention_mask"]
  want = {
      "mlm_soft": losses.soft_cross_entropy(s_mlm, t_mlm, 3.0, batch["masked_lm_weights"]),
      "nsp_soft": losses.soft_cross_entropy(s_nsp, t_nsp, 3.0),
      "hidden_cosine": losses.hidden_cosine(s_int["hidden"], t_int["hidden"], tokens),
      "minilm": losses.attention_relation_kl(s_int, t_int, tokens, 2, ("qq", "kk", "vv")),
  }
  for name, value in want.items():
    np.testing.assert_allclose(float(metrics[f"distill_{name}"]), float(value), rtol=2e-5,
                               err_msg=name)
    assert float(value) > 1e-4, name  # the comparison is not of zeros
  total = (metrics["distill_mlm_hard"] + metrics["distill_nsp_hard"]
           + sum(float(weights[f"distill.{k}"]) * want[k] for k in want))
  np.testing.assert_allclose(float(metrics["loss"]), float(total), rtol=2e-5)


def test_the_teacher_gets_no_gradient_and_layer_init_copies_the_named_layers(teacher):
  config = _config(**{"distill.teacher": teacher, "distill.hidden_cosine": 1.0,
                      "distill.nsp_soft": 1.0, "distill.init_layers": "1"})
  setup = train.build(config, pretrain_testlib.one_device_mesh())
  run = setup.distill
  batch = _batch(config)
  params = setup.init_state().params
  counts = distill_lib.global_counts(batch, np.float32(config.global_batch_size),
                                     np.float32(batch["masked_lm_weights"].sum()))
  grads = jax.jit(jax.grad(lambda tp: distill_lib.micro_loss(
      run, setup.model, params, tp, batch, jax.random.PRNGKey(0), counts,
      train.pretraining_losses)[0]))(run.params)  # jitted: one compile, not one per op
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))
  # Student layer 0 <- teacher layer 1; embeddings and heads copied; nothing else changed.
  init = jax.device_get(distill_lib.init_student(run, params, setup.shardings.params))
  t = run.teacher.params
  for a, b in zip(jax.tree.leaves(init["bert"]["encoder"]["layer_0"]),
                  jax.tree.leaves(t["bert"]["encoder"]["layer_1"])):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(init["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"][
      "kernel"], t["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"])
  for part in (("bert", "embeddings"), ("bert", "pooler"), ("cls",)):
    a_tree, b_tree = init, t
    for key in part:
      a_tree, b_tree = a_tree[key], b_tree[key]
    for a, b in zip(jax.tree.leaves(a_tree), jax.tree.leaves(b_tree)):
      np.testing.assert_array_equal(a, b)


class _Killed(Exception):
  pass


def _kill_after(step):
  def hook(s, state, host):
    if s == step:
      raise _Killed(s)
  return hook


def _final_state(workdir, setup):
  checkpointer = ckpt.Checkpointer(os.path.join(workdir, ckpt.CHECKPOINTS_SUBDIR))
  try:
    state = checkpointer.restore(4, setup.abstract_state).state
  finally:
    checkpointer.close()
  return tree_lib.flatten_with_names(jax.device_get(state))


def test_end_to_end_resume_is_exact_checkpoints_hold_no_teacher_and_the_student_exports(
    teacher, tmp_path, monkeypatch, capsys):
  config = _config(**{"distill.teacher": teacher, "distill.hidden_cosine": 1.0,
                      "distill.init_layers": "every_other", "num_train_steps": 4,
                      "checkpoint_every_steps": 2, "log_every_steps": 2,
                      "eval_every_steps": 4, "num_eval_steps": 1})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  pretrain_testlib.run_pretraining(config, straight)
  assert "student initialised from teacher layers [0]" in capsys.readouterr().out
  monkeypatch.setattr(job_failure, "test_step_hook", _kill_after(2))
  with pytest.raises(_Killed):
    pretrain_testlib.run_pretraining(config, resumed)
  capsys.readouterr()
  monkeypatch.undo()
  pretrain_testlib.run_pretraining(config, resumed)
  out = capsys.readouterr().out
  assert "resumed from" in out and "initialised from teacher" not in out
  # Restoring checks every saved array against the student's train state (an array
  # the student lacks is an error): the checkpoint holds the student and nothing else.
  setup = train.build(config, pretrain_testlib.one_device_mesh())
  final = {w: _final_state(w, setup) for w in (straight, resumed)}
  assert final[straight].keys() == final[resumed].keys()
  for name in final[straight]:
    np.testing.assert_array_equal(final[straight][name], final[resumed][name], err_msg=name)
  assert not [n for n in final[straight] if "layer_1" in n]  # the teacher's second layer
  with open(os.path.join(straight, "checkpoints", "4", "meta", "metadata")) as f:
    meta = json.load(f)
  assert meta["teacher"] == setup.distill.meta
  records = [json.loads(line) for line in open(os.path.join(straight, "metrics.jsonl"))]
  assert any("distill_mlm_soft" in r and "distill_hidden_cosine" in r for r in records)

  other = _teacher_dir(tmp_path, seed=1)
  with pytest.raises(layout.IncompatibleCheckpointError, match="was trained with teacher"):
    pretrain_testlib.run_pretraining(
        _config(**{"num_train_steps": 4, "distill.teacher": other}), resumed)
  with pytest.raises(layout.IncompatibleCheckpointError, match="this run has no teacher"):
    pretrain_testlib.run_pretraining(_config(num_train_steps=4), resumed)

  # The student exports like any model (launch.export): transformers loads it with the
  # same logits as the checkpoint's parameters give here.
  import torch
  from transformers import BertForPreTraining
  from launch import export as export_lib
  params = tree_lib.unflatten({tuple(k.split("/")[1:]): v for k, v in final[straight].items()
                               if k.startswith("params/")})
  out = str(tmp_path / "hf_student")
  export_lib.export(straight, out)
  hf = BertForPreTraining.from_pretrained(out).eval()
  batch = _batch(config)
  mlm, nsp = setup.model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                               batch["attention_mask"], None, deterministic=True)
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(batch["input_ids"]),
                token_type_ids=torch.tensor(batch["token_type_ids"]),
                attention_mask=torch.tensor(batch["attention_mask"]))
  assert hf.config.num_hidden_layers == 1
  np.testing.assert_allclose(theirs.prediction_logits.numpy(), np.asarray(mlm), atol=1e-4)
  np.testing.assert_allclose(theirs.seq_relationship_logits.numpy(), np.asarray(nsp), atol=1e-4)


def _error(config, match):
  with pytest.raises(ValueError, match=match):
    train.build(config, pretrain_testlib.one_device_mesh())


def test_bad_input_errors_name_the_field(teacher, tmp_path):
  root = tmp_path
  wide = _teacher_dir(root, seed=2, hidden_size=128, intermediate_size=256)
  _error(_config(**{"distill.teacher": teacher, "model.vocab_size": 640}),
         r"teacher's vocabulary \(512 ids\) differs from the student's \(640")
  _error(_config(**{"distill.teacher": teacher, "distill.init_layers": "5"}),
         r"config.distill.init_layers='5'.*indices 0..1")
  _error(_config(**{"distill.teacher": teacher, "distill.init_layers": "a,b"}),
         "config.distill.init_layers='a,b': expected")
  _error(_config(**{"distill.teacher": wide, "distill.hidden_cosine": 1.0}),
         "config.distill.hidden_cosine=1.0 needs equal widths: student hidden_size 64, teacher 128")
  _error(_config(**{"distill.teacher": wide, "distill.init_layers": "0"}),
         "copies teacher layers, which needs equal widths")
  _error(_config(**{"distill.teacher": str(root)}), "not a model directory")
  _error(_config(**{"distill.teacher": teacher, "distill.teacher_dtype": "float16"}),
         "config.distill.teacher_dtype='float16'")
  # An encoder-only BertModel directory: no MLM head for the soft MLM term.
  from safetensors.numpy import load_file, save_file
  encoder = str(root / "encoder_only")
  os.makedirs(encoder)
  tensors = load_file(os.path.join(teacher, "model.safetensors"))
  save_file({k[len("bert."):]: v for k, v in tensors.items() if k.startswith("bert.")},
            os.path.join(encoder, "model.safetensors"))
  with open(os.path.join(teacher, "config.json")) as f, \
       open(os.path.join(encoder, "config.json"), "w") as g:
    g.write(f.read())
  _error(_config(**{"distill.teacher": encoder}),
         "config.distill.mlm_soft=1.0 needs the teacher's MLM head")
  # Without a soft term on the heads, the encoder-only teacher is fine (hidden states only).
  ok = train.build(_config(**{"distill.teacher": encoder, "distill.mlm_soft": 0.0,
                              "distill.hidden_cosine": 1.0}), pretrain_testlib.one_device_mesh())
  assert ok.distill is not None
  assert not glob.glob(str(root / "*" / "checkpoints"))


def test_bf16_teacher_and_the_distill_variant(teacher):
  from bert_jax.configs import tiny
  c = tiny.get_config("tiny,distill")
  assert c.model.num_hidden_layers == 1 and c.distill.init_layers == "every_other"
  from bert_jax.configs import base
  assert base.get_config("distill").model.num_hidden_layers == 6  # BERT-base's 12 halved
  assert base.get_config("").distill.teacher == ""                # off by default
  assert (c.distill.mlm_soft, c.distill.mlm_hard, c.distill.hidden_cosine,
          c.distill.temperature) == (5.0, 2.0, 1.0, 2.0)
  setup = train.build(_config(**{"distill.teacher": teacher, "distill.teacher_dtype": "bfloat16"}),
                      pretrain_testlib.one_device_mesh())
  assert {np.dtype(x.dtype) for x in jax.tree.leaves(setup.distill.params)} == {
      np.dtype(jax.numpy.bfloat16)}
  assert setup.distill.model.config.dtype == "bfloat16"
