"""Packed rows in the model and the loss: several instances per row give each instance
exactly what it gets alone in its own padded row (outputs, losses, gradients)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import batch as batch_lib
from bert_jax import model as model_lib
from bert_jax import train

L, P, K = 32, 4, 3
# Instance lengths; packed as rows [[0, 1, 2], [3]] (9+7+12 = 28 <= 32, then 20).
LENGTHS = (9, 7, 12, 20)
ROWS = ((0, 1, 2), (3,))


def _instances(vocab, seed=0):
  """Unpacked contract rows [N, L] for LENGTHS: [CLS] A [SEP] B [SEP] [PAD]..."""
  rng = np.random.default_rng(seed)
  n = len(LENGTHS)
  ids = np.zeros((n, L), np.int32)
  types = np.zeros((n, L), np.int32)
  positions = np.zeros((n, P), np.int32)
  weights = np.zeros((n, P), np.float32)
  for i, length in enumerate(LENGTHS):
    ids[i, :length] = rng.integers(5, vocab, length)
    a = length // 2
    types[i, a:length] = 1
    picks = np.sort(rng.choice(np.arange(1, length - 1), size=min(P, 1 + i), replace=False))
    positions[i, :len(picks)] = picks
    weights[i, :len(picks)] = 1.0
  mask = (np.arange(L)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
  return dict(input_ids=ids, token_type_ids=types, attention_mask=mask,
              masked_lm_positions=positions,
              masked_lm_ids=np.where(weights > 0, rng.integers(5, vocab, (n, P)), 0).astype(np.int32),
              masked_lm_weights=weights,
              next_sentence_labels=np.array([0, 1, 1, 0], np.int32))


def _pack(u):
  """The same instances as packed rows [R, L] (written out by hand, independently of the
  loader): offsets, restarted positions, instance ids 1..K, gathered [CLS] slots."""
  r = len(ROWS)
  out = {k: np.zeros((r, L), np.int32) for k in
         ("input_ids", "token_type_ids", "attention_mask", "position_ids", "instance_ids")}
  out.update(masked_lm_positions=np.zeros((r, 2 * P), np.int32),
             masked_lm_ids=np.zeros((r, 2 * P), np.int32),
             masked_lm_weights=np.zeros((r, 2 * P), np.float32),
             cls_positions=np.zeros((r, K), np.int32),
             instance_weights=np.zeros((r, K), np.float32),
             next_sentence_labels=np.zeros((r, K), np.int32))
  for row, members in enumerate(ROWS):
    offset, slot_p = 0, 0
    for slot, i in enumerate(members):
      n = LENGTHS[i]
      span = slice(offset, offset + n)
      out["input_ids"][row, span] = u["input_ids"][i, :n]
      out["token_type_ids"][row, span] = u["token_type_ids"][i, :n]
      out["attention_mask"][row, span] = 1
      out["position_ids"][row, span] = np.arange(n)
      out["instance_ids"][row, span] = slot + 1
      out["cls_positions"][row, slot] = offset
      out["instance_weights"][row, slot] = 1.0
      out["next_sentence_labels"][row, slot] = u["next_sentence_labels"][i]
      real = u["masked_lm_weights"][i] > 0
      m = int(real.sum())
      out["masked_lm_positions"][row, slot_p:slot_p + m] = u["masked_lm_positions"][i, real] + offset
      out["masked_lm_ids"][row, slot_p:slot_p + m] = u["masked_lm_ids"][i, real]
      out["masked_lm_weights"][row, slot_p:slot_p + m] = 1.0
      offset, slot_p = offset + n, slot_p + m
  return out


def _loss(model, params, batch):
  """The train step's loss (MLM mean over predictions + NSP mean over instances)."""
  logits = train._apply(model, params, batch, deterministic=True)
  sums = train.pretraining_losses(*logits, batch)
  loss = sums["mlm_loss_sum"] / sums["mlm_weight"] + sums["nsp_loss_sum"] / sums["num_sequences"]
  return loss, (logits, sums["num_sequences"])


@pytest.fixture(scope="module")
def setup():
  """The instances unpacked and packed, each through one compiled loss-and-gradient."""
  config = model_lib.bert_config("tiny", vocab_size=96, hidden_size=32, num_attention_heads=2,
                                 intermediate_size=64, num_hidden_layers=1,
                                 max_position_embeddings=L)
  unpacked = _instances(config.vocab_size)
  packed = _pack(unpacked)
  model = model_lib.BertForPreTraining(config)
  init = jax.jit(lambda key: model.init(key, **model_lib.dummy_inputs(config, 1, L, P)))
  params = nn.unbox(init(jax.random.key(0))["params"])
  grad = jax.jit(jax.value_and_grad(functools.partial(_loss, model), has_aux=True))
  results = {name: grad(params, batch) for name, batch in (("unpacked", unpacked), ("packed", packed))}
  return config, model, params, unpacked, packed, results


def _per_instance_losses(logits, batch):
  """(MLM cross-entropy per real prediction in instance order, NSP cross-entropy per
  real instance in instance order)."""
  mlm, nsp = logits
  mlm_ce = optax.softmax_cross_entropy_with_integer_labels(mlm, batch["masked_lm_ids"])
  nsp_ce = optax.softmax_cross_entropy_with_integer_labels(nsp, batch["next_sentence_labels"])
  mlm_ce = np.asarray(mlm_ce)[np.asarray(batch["masked_lm_weights"]) > 0]
  nsp_w = batch.get("instance_weights")
  nsp_ce = np.asarray(nsp_ce) if nsp_w is None else np.asarray(nsp_ce)[np.asarray(nsp_w) > 0]
  return mlm_ce, nsp_ce


def test_packed_rows_give_each_instance_its_unpacked_losses(setup):
  *_, unpacked, packed, results = setup
  mlm_u, nsp_u = _per_instance_losses(results["unpacked"][0][1][0], unpacked)
  mlm_p, nsp_p = _per_instance_losses(results["packed"][0][1][0], packed)
  assert mlm_u.shape == mlm_p.shape == (1 + 2 + 3 + 4,) and nsp_p.shape == (4,)
  np.testing.assert_allclose(mlm_p, mlm_u, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(nsp_p, nsp_u, rtol=1e-5, atol=1e-5)


def test_packed_gradients_match_unpacked(setup):
  (lu, (_, n_u)), gu = setup[-1]["unpacked"]
  (lp, (_, n_p)), gp = setup[-1]["packed"]
  np.testing.assert_allclose(lp, lu, rtol=1e-5)
  assert float(n_p) == float(n_u) == 4.0  # real instances, not rows or slots
  flat_u, flat_p = (dict(jax.tree_util.tree_flatten_with_path(g)[0]) for g in (gu, gp))
  assert len(flat_u) == len(flat_p) > 10
  for path, g in flat_u.items():
    np.testing.assert_allclose(flat_p[path], g, rtol=1e-5, atol=1e-5, err_msg=str(path))


def test_instances_in_a_row_do_not_see_each_other(setup):
  config, _, params, _, packed, _ = setup
  bert = jax.jit(functools.partial(model_lib.BertModel(config).apply, {"params": params["bert"]}))
  kw = {k: packed[k] for k in ("position_ids", "instance_ids", "cls_positions")}
  seq1, pooled1 = bert(packed["input_ids"], packed["token_type_ids"], packed["attention_mask"], **kw)
  changed = packed["input_ids"].copy()
  changed[0, 9:16] = 7  # the whole of instance 2 in row 0
  seq2, pooled2 = bert(changed, packed["token_type_ids"], packed["attention_mask"], **kw)
  np.testing.assert_allclose(seq1[0, :9], seq2[0, :9], atol=1e-6)
  np.testing.assert_allclose(seq1[0, 16:28], seq2[0, 16:28], atol=1e-6)
  assert np.abs(np.asarray(pooled1[0, 1] - pooled2[0, 1])).max() > 1e-3
  np.testing.assert_allclose(pooled1[0, [0, 2]], pooled2[0, [0, 2]], atol=1e-6)
  assert pooled1.shape == (2, K, config.hidden_size)


def test_cudnn_path_receives_the_block_mask(setup, monkeypatch):
  # attention_impl="cudnn" hands the mask to jax.nn.dot_product_attention; on the CPU its
  # portable implementation stands in for the cuDNN kernel (which needs a GPU).
  config, _, params, _, packed, results = setup
  seen = []
  original = model_lib.fused_attention

  def portable(q, k, v, mask, implementation=None):
    seen.append(mask.shape)
    return original(q, k, v, mask, implementation="xla")

  monkeypatch.setattr(model_lib, "fused_attention", portable)
  cudnn = model_lib.BertForPreTraining(config.replace(attention_impl="cudnn"))
  mlm_c, nsp_c = jax.jit(functools.partial(train._apply, cudnn, deterministic=True))(params, packed)
  mlm_x, nsp_x = results["packed"][0][1][0]
  assert seen and all(s == (2, 1, L, L) for s in seen)
  np.testing.assert_allclose(mlm_c, mlm_x, atol=1e-5)
  np.testing.assert_allclose(nsp_c, nsp_x, atol=1e-5)


def test_unpacked_batches_are_unchanged(setup):
  # Passing position ids 0..L-1 and one instance per row is the unpacked model.
  _, model, params, unpacked, _, results = setup
  mlm, nsp = results["unpacked"][0][1][0]
  n = len(LENGTHS)
  ids = unpacked["attention_mask"].astype(np.int32)
  as_packed = dict(unpacked, position_ids=np.broadcast_to(np.arange(L, dtype=np.int32), (n, L)),
                   instance_ids=ids, cls_positions=np.zeros((n, 1), np.int32),
                   instance_weights=np.ones((n, 1), np.float32),
                   next_sentence_labels=unpacked["next_sentence_labels"][:, None])
  mlm_p, nsp_p = jax.jit(functools.partial(train._apply, model, deterministic=True))(
      params, as_packed)
  np.testing.assert_allclose(mlm_p, mlm, atol=1e-5)
  np.testing.assert_allclose(nsp_p[:, 0], nsp, atol=1e-5)
  assert set(batch_lib.pretraining_arrays(unpacked)) == set(batch_lib.PRETRAINING_KEYS)
  assert set(batch_lib.pretraining_arrays(as_packed)) == set(
      batch_lib.PRETRAINING_KEYS + batch_lib.PACKED_KEYS)
