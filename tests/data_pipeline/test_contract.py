"""data_pipeline's batches and sources honour bert_jax's batch contract (defined once, in
bert_jax/batch.py: the pipeline satisfies it structurally, without importing it)."""
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax.finetune.config import FinetuneConfig
from data_pipeline.finetune import readers as fd
from data_pipeline import pretraining_source
from data_pipeline.finetune import tasks as text_tasks
from data_pipeline.text.tokenizer import load_tokenizer

DATA = dict(data_dir="", masked_lm_prob=0.15, short_seq_prob=0.1, pair_mode="nsp",
            whole_word_masking=False, worker_count=0)


def test_prepared_source_is_a_pretraining_source_with_contract_batches(synthetic_dataset,
                                                                       tmp_path):
  shapes = pretraining_source.BatchShapes(vocab_size=512, max_seq_length=32,
                                          max_predictions_per_seq=5, global_batch_size=4,
                                          eval_batch_size=4, seed=0)
  source = pretraining_source.from_config({**DATA, "data_dir": synthetic_dataset}, shapes,
                                          workdir=str(tmp_path))
  assert isinstance(source, batch_lib.PretrainingSource)
  assert source.tokenizer and source.vocab_size == source.manifest["vocab_size"]
  assert source.checkpoint_meta["data_dir"].endswith("data")
  train = source.train_batches()
  assert isinstance(train, batch_lib.BatchIterator)
  for batch in (next(train), next(iter(source.eval_batches()))):
    assert set(batch) == set(batch_lib.PRETRAINING_KEYS)
    assert batch["input_ids"].shape == (4, 32) and batch["masked_lm_ids"].shape == (4, 5)
    assert batch["masked_lm_weights"].dtype == np.float32
    assert batch["next_sentence_labels"].shape == (4,)


def test_finetuning_arrays_carry_the_contract_keys(tmp_path):
  assert fd.IGNORE_INDEX == batch_lib.IGNORE_INDEX  # the pipeline's structural copy
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "猫"])
                   + "\n")
  tok = load_tokenizer(str(vocab))
  cls = fd.encode_text_examples([fd.TextExample("the cat", None, "a", 2)], tok, 8,
                                task="classification", label_list=["a"])
  assert set(cls) == set(batch_lib.FINETUNING_KEYS)
  ner = text_tasks.make_text_task("ner", **FinetuneConfig(task="ner").text_options())
  conll = tmp_path / "t.conll"
  conll.write_text("猫 B-ANI\nthe O\n\n")
  items = ner.read(str(conll), True)
  enc = ner.encode(str(conll), items, tok, ["B-ANI", "O"], 8)
  assert set(enc.arrays) == set(batch_lib.FINETUNING_KEYS)
  assert (enc.arrays["labels"][0, 0] == batch_lib.IGNORE_INDEX)  # [CLS] predicts nothing
  # Decoding reads each word's tag at its first sub-token.
  assert ner.decode(enc, enc.arrays["labels"], ["B-ANI", "O"]) == [["B-ANI", "O"]]
