"""Task distillation through `finetune.run`: a frozen teacher, soft labels, bad input."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import partitioning
from bert_jax import tree as tree_lib
from bert_jax.finetune import distill
from bert_jax.finetune import loop as finetune
from data_pipeline.finetune import tasks as text_tasks
from tests.helpers import finetune as F


def _config(tmp_path, init_from, name, **kw):
  base = dict(task="classification", init_from=init_from, output_dir=str(tmp_path / name),
              max_seq_length=16, learning_rate=5e-3, num_epochs=4, log_every_steps=1000,
              length_buckets=1)
  return finetune.FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("data")
  return dict(
      init=F.make_hf_dir(str(d / "init")),
      train=str(F.write_tsv(d / "train.tsv", F.sentiment_rows(256, 0))),
      few=str(F.write_tsv(d / "few.tsv", F.sentiment_rows(16, 3))),
      dev=str(F.write_tsv(d / "dev.tsv", F.sentiment_rows(128, 1))),
      unlabelled=str(F.write_tsv(d / "unlabelled.tsv", [(s,) for s, _ in
                                                         F.sentiment_rows(256, 2)],
                                 header=("sentence",))),
      dir=d)


@pytest.fixture(scope="module")
def teacher(files):
  """A tiny classifier fine-tuned on 256 labelled rows (the teacher of every test)."""
  results = F.run(_config(files["dir"], files["init"], "teacher", train_file=files["train"],
                          eval_file=files["dev"], num_epochs=6))
  assert results["eval_accuracy"] >= 0.9, results["history"]
  return results["best_model_dir"]


def _setup(cfg):
  """The run's Setup, as `finetune.run` builds it (nothing trained yet)."""
  text = text_tasks.make_text_task(cfg.task, **cfg.text_options())
  cfg.validate()
  cfg = cfg.with_task_defaults()
  mesh = partitioning.make_mesh(cfg.mesh_shape)
  bert_config, pretrained, tokenizer, _ = finetune._load_checkpoint(cfg, text)
  labels = finetune.finetune_export.checkpoint_labels(cfg.init_from)
  files = finetune._read_files(cfg, text, tokenizer, labels)
  _, setup, _, _ = finetune._setup_for(cfg, mesh, bert_config, pretrained, labels, files,
                                       cache_dir=None)
  return setup, files


def test_teacher_is_frozen_and_outside_the_optimizer(tmp_path, files, teacher):
  cfg = _config(tmp_path, files["init"], "s", train_file=files["train"], eval_file=files["dev"],
                teacher=teacher)
  setup, data = _setup(cfg)
  teacher_before = jax.tree.map(lambda x: np.array(x, copy=True), setup.teacher.params)
  # The optimizer state holds moments of the student's parameters only.
  n_student = tree_lib.count_params(setup.state.params)
  moments = [x for x in jax.tree.leaves(setup.state.opt_state) if getattr(x, "ndim", 0) > 0]
  assert sum(x.size for x in moments) == 2 * n_student  # AdamW: mu and nu
  assert setup.trainable_count == n_student < n_student + setup.teacher.parameters
  batch = next(finetune.train_batches(data.train.arrays, 32, 0, 1))
  device_batch = finetune._to_device(setup, batch)
  state = setup.state
  for _ in range(3):
    state, metrics = setup.step("train", state, setup.train_frozen, device_batch)
    assert np.isfinite(float(metrics["loss"]))
  for path, before in tree_lib.flatten(teacher_before).items():
    np.testing.assert_array_equal(before, np.asarray(tree_lib.flatten(setup.teacher.params)[path]))
  # No gradient flows into the teacher through the distillation loss.
  objective = setup.teacher.objective
  student_out = jnp.asarray(np.random.default_rng(0).normal(size=(32, 2)), jnp.float32)

  def loss_of_teacher(teacher_params):
    out = objective.teacher_outputs(teacher_params, device_batch)
    return objective.loss(student_out, device_batch, out)[0]

  grads = jax.jit(jax.grad(loss_of_teacher))(setup.teacher.params)  # one compile, not one per op
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))


def test_alpha_zero_is_plain_finetuning(tmp_path, files, teacher):
  common = dict(train_file=files["train"], eval_file=files["dev"], num_epochs=2)
  plain = F.run(_config(tmp_path, files["init"], "plain", **common))
  zero = F.run(_config(tmp_path, files["init"], "zero", teacher=teacher, distill_alpha=0.0,
                       **common))
  assert zero["teacher"] == os.path.abspath(teacher) and zero["distill_alpha"] == 0.0
  for a, b in zip(plain["history"], zero["history"]):
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    assert a["accuracy"] == b["accuracy"]
  from bert_jax import interop
  _, p = interop.load_hf(str(tmp_path / "plain" / "best_model"))
  _, z = interop.load_hf(str(tmp_path / "zero" / "best_model"))
  for path, value in tree_lib.flatten(p).items():
    np.testing.assert_allclose(value, tree_lib.flatten(z)[path], atol=1e-5)


def test_soft_labels_on_unlabelled_rows_beat_few_hard_labels(tmp_path, files, teacher):
  """16 labelled rows alone vs the same 16 plus 256 unlabelled rows the teacher labels."""
  common = dict(train_file=files["few"], eval_file=files["dev"], num_epochs=6, seed=1)
  hard = F.run(_config(tmp_path, files["init"], "hard", **common))
  soft = F.run(_config(tmp_path, files["init"], "soft", teacher=teacher, distill_alpha=0.7,
                       distill_temperature=2.0, distill_file=files["unlabelled"], **common))
  assert soft["eval_accuracy"] >= 0.85, soft["history"]
  assert soft["eval_accuracy"] >= hard["eval_accuracy"] + 0.15, (hard["history"],
                                                                  soft["history"])


def test_student_from_teacher_layers_exports_for_transformers(tmp_path, files, teacher):
  cfg = _config(tmp_path, teacher, "half", train_file=files["train"], eval_file=files["dev"],
                predict_file=files["dev"], teacher=teacher, student_layers="every_other",
                num_epochs=1)
  results = F.run(cfg)
  best = str(tmp_path / "half" / "best_model")
  hf = F.read_json(os.path.join(best, "config.json"))
  assert hf["num_hidden_layers"] == 1 and hf["id2label"] == {"0": "neg", "1": "pos"}
  assert results["trainable_parameters"] < results["teacher_parameters"]
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer
  model = AutoModelForSequenceClassification.from_pretrained(best).eval()
  tok = AutoTokenizer.from_pretrained(best)
  preds = [json.loads(l) for l in (tmp_path / "half" / "predictions.jsonl").read_text()
           .splitlines()][:8]
  enc = tok([p["text"] for p in preds], padding="max_length", max_length=16,
            return_tensors="pt")
  with torch.no_grad():
    probs = torch.softmax(model(**enc).logits, -1).numpy()
  ours = np.array([[p["probabilities"]["neg"], p["probabilities"]["pos"]] for p in preds])
  np.testing.assert_allclose(probs, ours, atol=1e-4)


def _copy_with(src, dst, **meta):
  shutil.copytree(src, dst)
  path = os.path.join(dst, "finetune.json")
  data = {**F.read_json(path), **meta}
  with open(path, "w") as f:
    json.dump(data, f)
  return str(dst)


def test_bad_teachers_are_one_clear_error_and_write_nothing(tmp_path, files, teacher):
  vocab_dir = _copy_with(teacher, tmp_path / "vocab")
  with open(os.path.join(vocab_dir, "vocab.txt"), "a") as f:
    f.write("extra\n")
  cases = [
      (dict(teacher=_copy_with(teacher, tmp_path / "ner", task="ner")), "task=ner model"),
      (dict(teacher=_copy_with(teacher, tmp_path / "labels", labels=["a", "b"])),
       r"labels \['a', 'b'\]; this run's labels are \['neg', 'pos'\]"),
      (dict(teacher=str(files["dir"])), "not a fine-tuned model"),
      (dict(teacher=str(tmp_path / "nowhere")), "no such directory"),
      (dict(teacher=vocab_dir), "different vocabularies"),
      (dict(teacher=teacher, student_layers="0,5"), r"\[5\] outside the 2 layers"),
      (dict(distill_file=files["unlabelled"]), "needs --teacher"),
      (dict(teacher=teacher, distill_alpha=1.5), "distill_alpha=1.5"),
  ]
  for i, (kw, message) in enumerate(cases):
    cfg = _config(tmp_path, files["init"], f"bad{i}", train_file=files["train"],
                  eval_file=files["dev"], **kw)
    with pytest.raises(ValueError, match=message):
      F.run(cfg)
    assert not os.path.exists(tmp_path / f"bad{i}")


def test_mixed_batches_keep_every_batch_once():
  arrays = {"input_ids": np.ones((70, 8), np.int32), "token_type_ids": np.zeros((70, 8), np.int32),
            "attention_mask": np.ones((70, 8), np.int32), "labels": np.arange(70)}
  extra = {k: v for k, v in arrays.items() if k != "labels"}
  batches = list(distill.mixed_batches(finetune.train_batches, arrays, extra, 32, 0, 1, 1))
  labelled = [b for b in batches if distill.is_labelled(b)]
  assert len(batches) == 6 and len(labelled) == 3
  real = np.concatenate([b["labels"][b["attention_mask"][:, 0] == 1] for b in labelled])
  assert sorted(real) == list(range(70))
  # Another epoch, another interleaving of the two sources.
  orders = {tuple(distill.is_labelled(b) for b in distill.mixed_batches(
      finetune.train_batches, arrays, extra, 32, 0, epoch, 1)) for epoch in range(1, 6)}
  assert len(orders) > 1
