"""FLOPs, device peaks and MFU accounting."""

import jax
import pytest

from bert_jax import flops as metrics
from bert_jax import model as model_lib


def test_flops_of_bert_base_by_hand():
  c = model_lib.bert_config("base")
  seq, preds = 128, 20
  per_token_params = 12 * (4 * 768 * 768 + 2 * 768 * 3072)  # 84.9M encoder matmul weights
  expected = (6 * per_token_params * seq
              + 12 * 12 * 12 * 64 * seq * seq          # attention: 12·L·heads·head_dim·S per token
              + 6 * (768 * 768 + 768 * 30522) * preds  # MLM transform + decoder at 20 positions
              + 6 * (768 * 768 + 2 * 768))             # pooler + NSP
  assert metrics.train_flops_per_sequence(c, seq, preds) == expected
  # ~6.5e10 training FLOPs per 128-token sequence of BERT-base.
  assert 6.0e10 < expected < 7.5e10


def test_flops_grow_with_predictions_only_through_the_decoder():
  c = model_lib.bert_config("tiny", vocab_size=1000)
  extra = (metrics.train_flops_per_sequence(c, 64, 11)
           - metrics.train_flops_per_sequence(c, 64, 10))
  assert extra == 6 * (128 * 128 + 128 * 1000)


@pytest.mark.parametrize("kind,peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-40GB", 312e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12),
    ("TPU v5p", 459e12), ("Tesla T4", None)])
def test_peak_table(kind, peak):
  assert metrics.peak_flops_for(kind) == peak


def test_cpu_peak_is_measured_and_mfu_divides_by_it():
  peak, source = metrics.system_peak_flops(jax.devices("cpu")[:2])
  assert source == "measured CPU matmul"
  assert 1e8 < peak < 1e14
  assert metrics.mfu(peak / 4, peak) == 0.25
  assert metrics.mfu(1.0, None) is None
