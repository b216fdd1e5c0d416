"""The field set shared by every preset config, and its variants.

A config is a locked `ml_collections.ConfigDict`: a typo in a `--config.FIELD=`
override is an error, not a silently ignored key (absl's config flag locks it; call
`.lock()` yourself when building one in Python).

Variants (comma-separated after the file name, `PRESET.py:tiny,bf16`):
  tiny  shrink model, batch, sequence and steps to a CPU smoke test that keeps the
        preset's structural choices (dtype, remat, scan); seconds per step on a laptop.
  bf16  bfloat16 compute with float32 parameters and optimizer state.
  fp32  float32 compute (the default for the tiny/mini presets).
  lamb  the LAMB optimizer (large batches).
  packed  several instances per training row (`data.packing`): for corpora of short
        documents and for seq 512, where rows are otherwise mostly [PAD]; off in the
        presets, whose seq-128 rows on long documents are ~92% full already.
  distill  DistilBERT's general distillation of the preset (Sanh et al. 2019): a student
        of half the depth, initialised from every other teacher layer, trained on
        5 x soft MLM (T=2) + 2 x MLM + 1 x hidden-state cosine (+ NSP, which this loop's
        data carries). Give the teacher: `--config.distill.teacher=DIR`.
"""
from __future__ import annotations

import dataclasses

import ml_collections

VARIANTS = ("tiny", "bf16", "fp32", "lamb", "packed", "distill")


def model_config(preset: str, **overrides) -> ml_collections.ConfigDict:
  """Every `BertConfig` field of `preset` (BERT's or a modern one), so each one can be
  overridden by flag."""
  from bert_jax import model as model_lib

  return ml_collections.ConfigDict(
      dataclasses.asdict(model_lib.preset_config(preset, **overrides)))


def base_config(preset: str) -> ml_collections.ConfigDict:
  """BERT's pretraining recipe (Devlin et al. 2019, phase 1) for `preset`."""
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.model = model_config(preset)

  # Data: read by the launcher, which builds the data source (the text package's
  # prepared shards / quickstart corpus, or bert_jax.synthetic) and hands it to the
  # loop; bert_jax itself never reads config.data. An empty data_dir means the
  # quickstart: the embedded default corpus is prepared under WORKDIR/data with the
  # model's vocabulary size.
  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""
  c.data.synthetic = False      # random contract batches: benchmarks, smoke tests
  c.data.masked_lm_prob = 0.15
  c.data.short_seq_prob = 0.1
  c.data.pair_mode = "nsp"
  c.data.whole_word_masking = False
  c.data.worker_count = 0
  # Packing: several instances per training row (global_batch_size then counts rows), each
  # confined to itself by a block-diagonal attention mask; eval batches stay unpacked.
  c.data.packing = False
  c.data.packing_max_instances = 8   # instance slots per packed row (NSP predictions per row)
  # The shapes the model is built for; the source makes batches of these.
  c.max_seq_length = 128
  c.max_predictions_per_seq = 20
  # Optimisation.
  c.global_batch_size = 256
  c.num_micro_batches = 1       # gradient accumulation: global batch = M micro-batches
  c.num_train_steps = 1_000_000
  c.learning_rate = 1e-4
  c.warmup_steps = 10_000
  c.schedule = "linear"         # or "cosine", or "wsd" (warmup-stable-decay, 1-sqrt decay)
  c.decay_fraction = 0.1        # wsd: the share of num_train_steps spent decaying
  c.optimizer = "adamw"         # or "lamb", or "stableadamw"
  c.weight_decay = 0.01
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-6
  c.grad_clip_norm = 1.0

  # Devices: (data, fsdp, tensor), one entry may be -1 (fills the rest).
  c.mesh_shape = (1, -1, 1)
  c.logical_axis_rules = _default_rules()

  # Loop.
  c.seed = 0
  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.num_eval_steps = 100
  c.eval_batch_size = 256
  c.write_tensorboard = True
  # Checkpoints (bert_jax/checkpointing/manager.py). A run starts from the latest complete
  # checkpoint in WORKDIR/checkpoints, else from init_from (parameters only), else fresh.
  c.checkpoint_every_steps = 1000  # also saved at the last step and on SIGTERM; 0: only those
  c.keep_checkpoints = 3           # the last K are kept ...
  c.keep_period = 0                # ... and every step divisible by this (> 0) for good
  c.init_from = ""                 # one of our workdirs/checkpoints, or a Hugging Face BERT dir
  c.distill = distill_config()     # general distillation: off while distill.teacher is ""
  return c


def modern_config(preset: str) -> ml_collections.ConfigDict:
  """ModernBERT's recipe (Warner et al. 2024, phase 1) for a modern `preset`: MLM only at
  a 30% masking rate (no NSP: pair_mode 'none', no pooler), sequences of 1024 tokens,
  StableAdamW with a warmup-stable-decay schedule, decoupled weight decay 1e-5."""
  c = base_config(preset)
  c.data.pair_mode = "none"
  c.data.masked_lm_prob = 0.3
  c.max_seq_length = 1024
  c.max_predictions_per_seq = 320  # >= 30% of the 1021 maskable tokens of a full row
  c.optimizer = "stableadamw"
  c.schedule = "wsd"
  c.decay_fraction = 0.1
  c.adam_b1 = 0.9
  c.adam_b2 = 0.98
  c.adam_eps = 1e-6
  c.weight_decay = 1e-5
  c.grad_clip_norm = 0.0   # StableAdamW clips each tensor's update instead
  c.global_batch_size = 512
  c.eval_batch_size = 64
  c.learning_rate = 8e-4
  c.warmup_steps = 3_000
  c.num_train_steps = 200_000
  return c


# Fields that moved under config.data, by their old top-level names: `--config.OLD=` is an
# error that names the new field (launch/cli.py asks `moved_field`).
FORMER_NAMES = {
    "data_dir": "data.data_dir",
    "synthetic_data": "data.synthetic",
    "masked_lm_prob": "data.masked_lm_prob",
    "short_seq_prob": "data.short_seq_prob",
    "pair_mode": "data.pair_mode",
    "whole_word_masking": "data.whole_word_masking",
    "worker_count": "data.worker_count",
}


def distill_config() -> ml_collections.ConfigDict:
  """config.distill: general distillation (bert_jax/distillation), off while `teacher` is
  "". The teacher is one of our workdirs/checkpoints or a Hugging Face BERT directory,
  frozen and never saved into the student's checkpoints."""
  d = ml_collections.ConfigDict()
  d.teacher = ""
  d.teacher_dtype = "float32"   # or "bfloat16" (half the teacher's memory)
  d.init_layers = ""            # "" | "every_other" | "0,2,4": student layer i <- these
  d.temperature = 2.0
  d.mlm_soft = 1.0              # T^2 x soft cross-entropy on the masked positions
  d.mlm_hard = 1.0              # the student's own MLM loss
  d.nsp_soft = 0.0
  d.nsp_hard = 1.0
  d.hidden_cosine = 0.0         # 1 - cos of last hidden states (equal widths)
  d.minilm = 0.0                # MiniLM last-layer relation KL (any widths)
  d.relation_heads = 0          # 0: the student's attention heads
  d.relations = "qq,kk,vv"
  return d


def moved_field(path: str) -> str | None:
  """The field's name today if `path` (e.g. "data_dir") is the old name of a moved field."""
  return FORMER_NAMES.get(path)


def _default_rules():
  from bert_jax import partitioning

  return tuple(partitioning.DEFAULT_RULES)


def apply_variants(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  names = [v for v in (variant or "").split(",") if v]
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    raise ValueError(f"unknown config variant(s) {unknown}; known: {VARIANTS}")
  for name in names:
    if name == "tiny":
      _tiny(c)
    elif name == "bf16":
      c.model.dtype = "bfloat16"
      c.model.param_dtype = "float32"
    elif name == "fp32":
      c.model.dtype = "float32"
    elif name == "lamb":
      c.optimizer = "lamb"
    elif name == "packed":
      c.data.packing = True
    elif name == "distill":
      c.model.num_hidden_layers = max(1, c.model.num_hidden_layers // 2)
      c.distill.init_layers = "every_other"
      c.distill.temperature = 2.0
      c.distill.mlm_soft = 5.0
      c.distill.mlm_hard = 2.0
      c.distill.hidden_cosine = 1.0
  return c


def _tiny(c: ml_collections.ConfigDict) -> None:
  c.model.num_hidden_layers = 2
  c.model.hidden_size = 64
  c.model.num_attention_heads = 2
  c.model.intermediate_size = 256
  c.model.vocab_size = 512
  c.model.pad_token_id = 0  # our tokenizers' [PAD] (ModernBERT's 50283 is past 512)
  c.model.max_position_embeddings = 64
  c.max_seq_length = 32
  c.max_predictions_per_seq = 5
  c.data.packing_max_instances = 4
  c.global_batch_size = 16
  c.eval_batch_size = 16
  c.num_train_steps = 20
  c.warmup_steps = 2
  c.log_every_steps = 5
  c.eval_every_steps = 10
  c.num_eval_steps = 2
  c.learning_rate = 1e-3
  c.checkpoint_every_steps = 10
  if c.model.sliding_window:
    # Keep the local/global alternation at two layers, with a window inside the row.
    c.model.sliding_window = 16
    c.model.global_every = 2
    c.max_predictions_per_seq = 10  # 30% of a 32-token row
