"""Every shipped config parses through absl's config flag, is locked, and builds."""

import glob
import os

import jax
import pytest
from absl import flags
from ml_collections import config_flags

from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import train
from bert_jax.configs import common

from tests.helpers import REPO
CONFIG_DIR = os.path.join(REPO, "bert_jax", "configs")
PRESETS = ("tiny", "mini", "small", "medium", "base", "large", "modernbert_tiny",
           "modernbert_base", "modernbert_large")
REQUIRED = ("data.data_dir", "num_train_steps", "global_batch_size", "max_seq_length",
            "max_predictions_per_seq", "learning_rate", "warmup_steps", "log_every_steps",
            "eval_every_steps", "seed")


def test_every_preset_has_a_config_file():
  files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))}
  assert files - {"__init__", "common"} == set(PRESETS)


def _parse(argv):
  fv = flags.FlagValues()
  # Override flags are declared from the argv seen at definition time.
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=["prog"] + argv)
  fv(["prog"] + argv)
  return fv.config


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("variant", ["", "tiny", "tiny,bf16,lamb"])
def test_config_parses_and_builds(preset, variant):
  path = os.path.join(CONFIG_DIR, f"{preset}.py") + (f":{variant}" if variant else "")
  config = _parse([f"--config={path}", "--config.num_train_steps=20000"])
  assert config.num_train_steps == 20000
  assert config.preset == preset.replace("_", "-")
  for field in REQUIRED:
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
      node = node[p]
    assert leaf in node
  train.validate_config(config)
  model_config = train.model_config_from(config)
  expected = model_lib.preset_config(config.preset)
  if not variant:
    assert (model_config.num_hidden_layers, model_config.hidden_size) == (
        expected.num_hidden_layers, expected.hidden_size)
  tx, _ = optim.optimizer_from_config(config)
  # Build the whole train state abstractly: shapes only, no memory, any size.
  model = model_lib.BertForPreTraining(model_config)
  inputs = model_lib.dummy_inputs(model_config, seq_len=config.max_seq_length,
                                  num_predictions=config.max_predictions_per_seq)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), **inputs)["params"])
  jax.eval_shape(tx.init, params)


def test_unknown_override_is_refused():
  with pytest.raises(Exception, match="num_train_stepz"):
    _parse([f"--config={CONFIG_DIR}/tiny.py", "--config.num_train_stepz=7"])


def test_model_fields_are_overridable():
  config = _parse([f"--config={CONFIG_DIR}/base.py:tiny", "--config.model.dtype=float32",
                   "--config.mesh_shape=(2,2,2)"])
  assert config.model.dtype == "float32"
  assert tuple(config.mesh_shape) == (2, 2, 2)


def test_packed_variant_turns_packing_on_and_the_presets_leave_it_off():
  assert not common.apply_variants(common.base_config("base"), "").data.packing
  packed = common.apply_variants(common.base_config("base"), "tiny,packed")
  assert packed.data.packing and packed.data.packing_max_instances == 4


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="unknown config variant"):
    common.apply_variants(common.base_config("tiny"), "tiny,huge")


def test_bad_field_values_are_named():
  config = common.base_config("tiny")
  config.global_batch_size = 10
  config.num_micro_batches = 4
  with pytest.raises(ValueError, match="config.num_micro_batches=4"):
    train.validate_config(config)
  config = common.base_config("tiny")
  config.max_seq_length = 1024
  with pytest.raises(ValueError, match="config.model.max_position_embeddings"):
    train.validate_config(config)
  config = common.base_config("tiny")
  config.model.hidden_act = "swish"
  with pytest.raises(ValueError, match="hidden_act"):
    train.validate_config(config)


def test_moved_data_fields_are_known_by_their_old_names_only_to_say_where_they_went():
  config = common.base_config("tiny")
  for old, new in common.FORMER_NAMES.items():
    assert old not in config, old  # one name in the config itself
    parent, leaf = new.split(".")
    assert leaf in config[parent], new
    assert common.moved_field(old) == new
  assert common.moved_field("num_train_steps") is None
