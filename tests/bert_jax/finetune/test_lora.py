"""LoRA: frozen parameters stay bit-identical through training; adapters merge on export."""
import numpy as np
import jax

from bert_jax import interop
from bert_jax.finetune import loop as finetune
from bert_jax.finetune import lora
from bert_jax import partitioning
from bert_jax import tree as tree_lib
from data_pipeline.finetune import readers as finetune_data
from data_pipeline.text import hf_tokenizer
from data_pipeline.text import tokenizer as tokenizers
from tests.helpers import finetune as F


def test_lora_trains_adapters_only_and_merges_on_export(tmp_path):
  hf_dir = F.make_hf_dir(str(tmp_path / "init"))
  bert_config, pretrained = interop.load_hf(hf_dir)
  cfg = finetune.FinetuneConfig(task="classification", init_from=hf_dir,
                                output_dir=str(tmp_path / "out"), max_seq_length=16,
                                learning_rate=1e-2, lora_rank=4, lora_alpha=8.0,
                                train_file="unused", eval_file="unused")
  mesh = partitioning.make_mesh(cfg.mesh_shape)
  setup = finetune.build(cfg, bert_config, {"bert": pretrained["bert"]}, 2, mesh, 6)

  hidden, rank, layers = 32, 4, 2
  # A [H, r] + B [r, N, D] on query and value of each layer, plus the fresh classifier.
  assert setup.trainable_count == layers * 2 * (hidden * rank + rank * hidden) + hidden * 2 + 2
  assert set(setup.state.params) == {"model", "lora"}
  assert set(setup.state.params["model"]) == {"classifier"}
  frozen_before = jax.tree.map(lambda x: np.array(x, copy=True), setup.frozen)
  trained_before = jax.tree.map(lambda x: np.array(x, copy=True), setup.state.params)

  tok = tokenizers.load_tokenizer(hf_dir)
  examples = [finetune_data.TextExample(t, None, l, i)
              for i, (t, l) in enumerate(F.sentiment_rows(32, 0))]
  batch = finetune_data.encode_text_examples(examples, tok, 16, task="classification",
                                             label_list=["neg", "pos"])
  state = setup.state
  for _ in range(6):
    state, metrics = setup.train(state, setup.frozen, partitioning.host_to_device(batch, mesh))
  assert np.isfinite(float(metrics["loss"]))

  # Frozen: bit-identical. Trained: every leaf moved (B leaves zero at the first step).
  flat_frozen = tree_lib.flatten(frozen_before)
  for path, after in tree_lib.flatten(jax.tree.map(np.asarray, setup.frozen)).items():
    assert after.tobytes() == flat_frozen[path].tobytes(), path
  flat_trained = tree_lib.flatten(trained_before)
  for path, after in tree_lib.flatten(jax.tree.map(np.asarray, state.params)).items():
    assert not np.array_equal(after, flat_trained[path]), path

  # Export: W + (alpha / r) A B on query/value; everything else exactly the checkpoint's.
  merged = setup.merged_params(state.params)
  finetune.save_model(str(tmp_path / "export"), cfg, bert_config, merged, ["neg", "pos"],
                      lambda d: hf_tokenizer.export_tokenizer(tok, d, model_max_length=64))
  _, exported = interop.load_hf(str(tmp_path / "export"))
  adapters = jax.tree.map(np.asarray, state.params["lora"])
  source = tree_lib.flatten(pretrained)
  targets = set(lora.target_kernels(pretrained))
  assert len(targets) == layers * 2
  for path, value in tree_lib.flatten(exported).items():
    if path[0] == "cls":
      continue
    if path in targets:
      node = adapters
      for key in path[:-1]:
        node = node[key]
      expected = source[path] + 2.0 * np.einsum("hr,rnd->hnd", node["lora_a"], node["lora_b"])
      np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
      assert not np.array_equal(value, source[path])
    else:
      assert value.tobytes() == source[path].tobytes(), path


def test_split_combine_and_merge_identity():
  params = {"bert": {"encoder": {"layer_0": {"attention": {"self": {
      "query": {"kernel": np.ones((4, 2, 2), np.float32), "bias": np.zeros((2, 2), np.float32)},
      "key": {"kernel": np.ones((4, 2, 2), np.float32)}}}}}}, "classifier": {"bias": np.zeros(2)}}
  trained, frozen = lora.split(params, lambda p: p[0] == "classifier")
  assert list(trained) == ["classifier"] and "classifier" not in frozen
  assert tree_lib.flatten(lora.combine(trained, frozen)).keys() == tree_lib.flatten(params).keys()
  adapters = jax.tree.map(np.asarray, jax.tree.map(
      lambda b: b.value, lora.init_adapters(jax.random.PRNGKey(0), params, rank=3),
      is_leaf=lambda x: hasattr(x, "names")))
  q = adapters["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]
  assert q["lora_a"].shape == (4, 3) and q["lora_b"].shape == (3, 2, 2)
  assert not q["lora_b"].any()  # B = 0: training starts from the pretrained function
  merged = lora.merge(params, adapters, 2.0)
  np.testing.assert_array_equal(
      merged["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"],
      params["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"])
  assert lora.target_kernels(params) == [
      ("bert", "encoder", "layer_0", "attention", "self", "query", "kernel")]
