"""bert_jax.checkpointing.manager: elastic restore, asynchronous saves, damaged and foreign
checkpoints, the start precedence, retention, preemption and the metrics rewind."""
import json
import os
import signal
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import pretrain as pretrain_testlib
from bert_jax.checkpointing import manager as ckpt
from bert_jax.checkpointing import init_from as init_from_lib
from bert_jax import interop
from bert_jax import metrics as metrics_lib
from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import partitioning
from bert_jax.multihost import preemption as preemption_lib
from bert_jax import synthetic
from bert_jax import train
from bert_jax import tree as tree_lib

META = {"config": {"note": "test"}, "tokenizer": {"identity": "abc"}}


def _setup(mesh, **fields):
  config = pretrain_testlib.small_config(**fields)
  model = model_lib.BertForPreTraining(train.model_config_from(config))
  tx, _ = optim.optimizer_from_config(config)
  return config, model, tx


def _abstract(config, model, tx, mesh):
  return train.abstract_train_state(config, model, tx, mesh)[0]


def _perturbed(state):
  """A state unlike a fresh init (non-zero moments, step 7), so restores prove something.
  Made on the host and put back on the same shardings: no compilation."""
  rng = np.random.default_rng(1)
  host = jax.device_get(state)
  def bump(x):
    if np.issubdtype(x.dtype, np.floating):
      return (x + rng.standard_normal(x.shape)).astype(x.dtype)
    return x
  host = host.replace(step=np.asarray(7, np.int32), params=jax.tree.map(bump, host.params),
                      opt_state=jax.tree.map(bump, host.opt_state))
  return jax.device_put(host, jax.tree.map(lambda a: a.sharding, state))


def _host(tree):
  return tree_lib.flatten_with_names(jax.device_get(tree))


def _assert_equal(a, b):
  a, b = _host(a), _host(b)
  assert a.keys() == b.keys()
  different = [k for k in a if not np.array_equal(np.asarray(a[k]), np.asarray(b[k]))]
  assert not different, different


@pytest.fixture(scope="module")
def fsdp8():
  """A perturbed state on all 8 devices (fsdp=8); `fresh_state` holds the fresh one."""
  mesh = partitioning.make_mesh((1, -1, 1))
  assert dict(mesh.shape)["fsdp"] == 8
  config, model, tx = _setup(mesh)
  fresh = train.create_train_state(config, model, tx, mesh)[0]
  fresh_state.append(jax.device_get(fresh))
  return config, model, tx, mesh, _perturbed(fresh)


fresh_state = []


def test_elastic_restore_onto_2_and_1_devices(fsdp8, tmp_path):
  config, model, tx, mesh, state = fsdp8
  checkpointer = ckpt.Checkpointer(str(tmp_path / "checkpoints"))
  data_state = {"version": 1, "grain": {"next_index": 12}}
  checkpointer.save(7, state, meta=META, data_state=data_state)
  checkpointer.close()
  kernel = state.params["bert"]["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
  assert len(kernel.sharding.device_set) == 8

  for n in (2, 1):
    new_mesh = partitioning.make_mesh((1, -1, 1), jax.devices()[:n])
    abstract = _abstract(config, model, tx, new_mesh)
    restored = ckpt.Checkpointer(str(tmp_path / "checkpoints")).restore_latest(abstract)
    assert restored.step == 7 and restored.data_state == data_state
    assert restored.meta["tokenizer"] == META["tokenizer"]
    _assert_equal(restored.state, state)
    for got, want in zip(jax.tree.leaves(restored.state), jax.tree.leaves(abstract)):
      assert got.sharding == want.sharding
      assert len(got.sharding.device_set) == n


def test_async_save_is_a_snapshot_despite_donation(tmp_path):
  """The loop donates the state to the next step while the save is in flight."""
  config = pretrain_testlib.small_config(synthetic_data=True)
  mesh = pretrain_testlib.one_device_mesh()
  state, steps = pretrain_testlib.build(config, mesh)
  batches = synthetic.SyntheticSource.from_config(config).train_batches()
  checkpointer = ckpt.Checkpointer(str(tmp_path / "checkpoints"))
  state, _ = steps.train(state, partitioning.host_to_device(next(batches), mesh))
  snapshot, position = jax.device_get(state), batches.get_state()
  checkpointer.save(1, state, meta=META, data_state=position)
  for _ in range(3):  # overwrite the donated buffers while the save is written
    state, _ = steps.train(state, partitioning.host_to_device(next(batches), mesh))
  checkpointer.wait()
  abstract = partitioning.abstract_of(state, jax.tree.map(lambda x: x.sharding, state))
  restored = checkpointer.restore(1, abstract)
  _assert_equal(restored.state, snapshot)
  assert restored.data_state == position
  checkpointer.close()


def _largest_file(directory):
  files = [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]
  return max(files, key=os.path.getsize)


def test_damaged_checkpoints_fall_back_to_the_previous_one(fsdp8, tmp_path, capsys):
  config, model, tx, mesh, state = fsdp8
  directory = str(tmp_path / "checkpoints")
  checkpointer = ckpt.Checkpointer(directory, keep=5)
  for step in (1, 2, 3):
    checkpointer.save(step, state.replace(step=jnp.asarray(step, jnp.int32)), meta=META,
                      data_state={"index": step})
  checkpointer.close()
  abstract = _abstract(config, model, tx, mesh)

  # Step 3: its largest array file truncated to half.
  victim = _largest_file(os.path.join(directory, "3", "state"))
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  # Step 2: a missing file (its data position).
  os.remove(os.path.join(directory, "2", "data", "process_0-of-1.json"))

  checkpointer = ckpt.Checkpointer(directory, keep=5)
  restored = checkpointer.restore_latest(abstract)
  out = capsys.readouterr().out
  assert restored.step == 1 and restored.data_state == {"index": 1}
  _assert_equal(restored.state.params, state.params)
  assert f"checkpoint {directory}/3 is damaged" in out
  assert f"checkpoint {directory}/2 is damaged" in out
  assert "process_0-of-1.json" in out
  # Moved out of the way, so steps 2 and 3 can be saved again by the resumed run.
  assert checkpointer.steps() == [1]
  assert sorted(n.split("-")[0] for n in os.listdir(tmp_path / ckpt.DAMAGED_SUBDIR)) == ["2", "3"]

  # Nothing readable left: an error, never a silent restart from scratch.
  os.remove(os.path.join(directory, "1", "meta", "metadata"))
  with pytest.raises(ckpt.CheckpointError, match="every checkpoint .* is damaged"):
    ckpt.Checkpointer(directory).restore_latest(abstract)


def test_foreign_checkpoint_lists_every_mismatch(fsdp8, tmp_path):
  config, model, tx, mesh, state = fsdp8
  directory = str(tmp_path / "checkpoints")
  checkpointer = ckpt.Checkpointer(directory)
  checkpointer.save(4, state, meta=META, data_state={})
  checkpointer.save(5, state, meta=META, data_state={})
  checkpointer.close()
  other = _setup(mesh, **{"model.vocab_size": 640})
  with pytest.raises(ckpt.IncompatibleCheckpointError) as e:
    ckpt.Checkpointer(directory).restore_latest(_abstract(*other, mesh))
  message = str(e.value)
  assert f"checkpoint {directory}/5 does not fit" in message
  # Embedding rows and MLM bias, in the params and in both Adam moments.
  assert "6 mismatched array(s)" in message
  assert ("params/bert/embeddings/word_embeddings/embedding: checkpoint (512, 64) float32, "
          "this run (640, 64) float32") in message
  assert "params/cls/predictions/bias" in message and "opt_state/1/0/nu/cls/predictions/bias" in message
  assert ckpt.Checkpointer(directory).steps() == [4, 5]  # nothing moved aside, nothing loaded

  # init_from of the same checkpoint: parameters only, the same strictness.
  with pytest.raises(ckpt.IncompatibleCheckpointError, match=r"bert/embeddings/word_embeddings/embedding: checkpoint \(512, 64\)"):
    init_from_lib.load_params(str(tmp_path), _abstract(*other, mesh).params)


def test_precedence_checkpoint_then_init_from_then_fresh(fsdp8, tmp_path):
  config, model, tx, mesh, state = fsdp8
  abstract = _abstract(config, model, tx, mesh)
  # create_train_state compiles its init on every call: reuse the fixture's.
  fresh = jax.device_put(fresh_state[0], jax.tree.map(lambda a: a.sharding, abstract))

  def start(workdir, init_from=""):
    return ckpt.restore_or_initialize(
        ckpt.Checkpointer(os.path.join(workdir, ckpt.CHECKPOINTS_SUBDIR)),
        abstract_state=abstract, init_state=lambda: jax.tree.map(jnp.copy, fresh),
        init_from=init_from, model_config=model.config)

  # (3) nothing: fresh init.
  s = start(str(tmp_path / "a"))
  assert s.source == "fresh" and s.step == 0
  _assert_equal(s.state, fresh)

  # (2) init_from one of our workdirs: its parameters, fresh optimizer and step.
  source = str(tmp_path / "source")
  checkpointer = ckpt.Checkpointer(os.path.join(source, ckpt.CHECKPOINTS_SUBDIR))
  checkpointer.save(7, state, meta=META, data_state={})
  checkpointer.close()
  s = start(str(tmp_path / "b"), init_from=source)
  assert s.source == "init_from" and s.step == 0 and s.path == f"{source}/checkpoints/7"
  _assert_equal(s.state.params, state.params)
  _assert_equal(s.state.opt_state, fresh.opt_state)
  assert s.data_state is None

  # (1) a checkpoint in the workdir wins over init_from.
  s = start(source, init_from=str(tmp_path / "b"))
  assert s.source == "checkpoint" and s.step == 7
  _assert_equal(s.state, state)

  # (2) init_from a Hugging Face directory.
  hf_dir = str(tmp_path / "hf")
  interop.save_hf(model.config, jax.device_get(state.params), hf_dir)
  s = start(str(tmp_path / "c"), init_from=hf_dir)
  assert s.source == "init_from" and s.step == 0
  _assert_equal(s.state.params, state.params)
  for got, want in zip(jax.tree.leaves(s.state.params), jax.tree.leaves(abstract.params)):
    assert got.sharding == want.sharding

  # A Hugging Face directory of another model: an error naming the fields.
  other = model.config.replace(hidden_size=32, intermediate_size=128)
  shapes = nn.unbox(jax.eval_shape(lambda: model_lib.BertForPreTraining(other).init(
      jax.random.PRNGKey(0), **model_lib.dummy_inputs(other))["params"]))
  interop.save_hf(other, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes),
                  str(tmp_path / "hf_other"))
  with pytest.raises(ckpt.IncompatibleCheckpointError, match="hidden_size: .* has 32, this run 64"):
    start(str(tmp_path / "d"), init_from=str(tmp_path / "hf_other"))
  with pytest.raises(ckpt.CheckpointError, match="not one of our checkpoints"):
    start(str(tmp_path / "e"), init_from=str(tmp_path / "a"))


def test_retention_keeps_last_k_and_every_period(fsdp8, tmp_path):
  state = fsdp8[-1]
  checkpointer = ckpt.Checkpointer(str(tmp_path / "checkpoints"), keep=2, keep_period=4)
  for step in range(1, 10):
    checkpointer.save(step, state, meta=META, data_state={})
  checkpointer.close()
  assert ckpt.Checkpointer(str(tmp_path / "checkpoints")).steps() == [4, 8, 9]


def test_preemption_saves_at_the_step_boundary_then_raises(fsdp8, tmp_path):
  state = fsdp8[-1]
  checkpointer = ckpt.Checkpointer(str(tmp_path / "checkpoints"))

  class Host:
    def get_state(self):
      return {"data": {"index": 5}, "loop": {}}

  with preemption_lib.PreemptionWatcher() as watcher:
    hook = ckpt.make_step_hook(checkpointer, every_steps=100, total_steps=1000,
                               meta_fn=lambda: META, preemption=watcher)
    hook(5, state, Host())  # not due, not preempted: nothing saved
    assert checkpointer.steps() == []
    os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag
    deadline = time.monotonic() + 10
    while not watcher.reached(6) and time.monotonic() < deadline:
      time.sleep(0.01)
    with pytest.raises(preemption_lib.Preempted) as e:
      hook(6, state, Host())
  assert e.value.step == 6
  # Committed (not a temporary directory) before Preempted propagates: the
  # process may exit right away.
  assert checkpointer.steps() == [6]
  assert signal.getsignal(signal.SIGTERM) is not watcher._on_signal  # handler restored
  checkpointer.close()


def test_rewind_metrics_drops_later_and_torn_records(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (5, 10, 10, 15)]
  path.write_text("".join(lines) + '{"step": 20, "lo')
  assert metrics_lib.rewind_metrics(str(tmp_path), 10) == 2
  assert path.read_text() == "".join(lines[:3])
  assert metrics_lib.rewind_metrics(str(tmp_path), 10) == 0


def test_config_fields_are_checked():
  with pytest.raises(ValueError, match="config.keep_checkpoints=0"):
    ckpt.check_config(pretrain_testlib.small_config(keep_checkpoints=0))
  with pytest.raises(ValueError, match="config.init_from='/nonexistent'"):
    ckpt.check_config(pretrain_testlib.small_config(init_from="/nonexistent"))
