"""The persistent compilation cache: a second identical run compiles nothing new."""
import os

import jax

from bert_jax import compilation_cache
from bert_jax.finetune import loop as finetune
from tests.helpers import finetune as F


def test_second_run_compiles_nothing(tmp_path):
  hf_dir = F.make_hf_dir(str(tmp_path / "init"))
  train = F.write_tsv(tmp_path / "train.tsv", F.sentiment_rows(64, 0))
  dev = F.write_tsv(tmp_path / "dev.tsv", F.sentiment_rows(16, 1))
  cache = tmp_path / "xla"

  def run(out, seed):
    return F.run(finetune.FinetuneConfig(
        task="classification", init_from=hf_dir, output_dir=str(tmp_path / out),
        train_file=str(train), eval_file=str(dev), max_seq_length=16, num_epochs=1,
        length_buckets=1, seed=seed, log_every_steps=1000, compilation_cache_dir=str(cache)))

  try:
    first = run("a", 0)
    entries = set(os.listdir(cache))
    assert first["compilation_cache_dir"] == str(cache) and entries
    # Another seed: other numbers, the same programs, all loaded from the cache.
    second = run("b", 1)
    assert set(os.listdir(cache)) == entries
    assert second["compile_seconds"] > 0
    off = F.run(finetune.FinetuneConfig(
        task="classification", init_from=str(tmp_path / "a" / "best_model"),
        output_dir=str(tmp_path / "c"),
        eval_file=str(dev), max_seq_length=16, compilation_cache_dir="none"))
    assert off["compilation_cache_dir"] is None and jax.config.jax_compilation_cache_dir is None
  finally:
    compilation_cache.configure(None)  # back to the session's cache (tests/conftest.py)


def test_resolve(monkeypatch):
  monkeypatch.delenv(compilation_cache.ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
  assert compilation_cache.resolve(None) == "/x/cache/bert_jax/xla"
  monkeypatch.setenv(compilation_cache.ENV, "NONE")
  assert compilation_cache.resolve(None) is None
  assert compilation_cache.resolve("~/c") == os.path.expanduser("~/c")
