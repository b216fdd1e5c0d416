"""The text-task registry mirrors the model side's, and each reading option is declared once."""
import dataclasses

import pytest

from bert_jax.finetune import tasks as model_tasks
from bert_jax.finetune.config import FinetuneConfig
from data_pipeline.finetune import tasks as text_tasks


def test_every_model_task_has_a_text_side_in_the_module_of_the_same_name():
  assert text_tasks.NAMES == model_tasks.NAMES
  for name in text_tasks.NAMES:
    text = text_tasks.make_text_task(name, **FinetuneConfig(task=name).text_options())
    model = model_tasks.get(name)
    assert text.name == model.name
    assert type(text).__module__.rsplit(".", 1)[1] == type(model).__module__.rsplit(".", 1)[1]


def test_text_options_are_the_tagged_config_fields_and_each_is_read_by_a_task():
  tagged = {f.name for f in dataclasses.fields(FinetuneConfig) if f.metadata.get("text")}
  config = FinetuneConfig(task="qa", doc_stride=7, label_column="y")
  assert set(config.text_options()) == tagged
  read = set()
  for name in text_tasks.NAMES:
    text = text_tasks.make_text_task(name, **config.text_options())
    assert set(text.OPTIONS) <= tagged, name  # a task reads only declared options
    assert text.meta() == {o: getattr(config, o) for o in text.OPTIONS}
    read |= set(text.OPTIONS)
  assert read == tagged  # and no declared option is read by nobody
  qa = text_tasks.make_text_task("qa", **config.text_options())
  assert qa.options.doc_stride == 7 and not hasattr(qa.options, "label_column")


def test_a_missing_option_or_task_is_named():
  with pytest.raises(ValueError, match=r"task=ner: text options \['tags_key'\] not given"):
    text_tasks.make_text_task("ner", tokens_key="tokens")
  with pytest.raises(ValueError, match=r"task='nope': no text side"):
    text_tasks.make_text_task("nope")
