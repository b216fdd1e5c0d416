"""Tokenizer files that Hugging Face transformers loads as ours: same text, same ids.

`export_tokenizer(tokenizer, output_dir)` writes, for
  * WordPiece: `vocab.txt`, `tokenizer_config.json` (BertTokenizer, `do_lower_case`)
    and a `tokenizer.json` from the `tokenizers` library's BERT pipeline (the one
    our WordPieceTokenizer runs), so both the slow and the fast path agree;
  * SentencePiece: a `tokenizer.json` built with the `tokenizers` library from the
    `.model` file (Unigram or BPE; the model's own normalisation table; the
    control symbols [PAD] [UNK] [CLS] [SEP] [MASK] as special tokens) and a
    `tokenizer_config.json` naming `PreTrainedTokenizerFast`.
Both add BERT's template: [CLS] A [SEP] (B [SEP], token type 1), as the
fine-tuning encoder does. Each file is written under a temporary name and renamed.

The construction follows transformers' own SentencePiece converter
(`convert_slow_tokenizer.SpmConverter`), without importing transformers. One
known difference from SentencePiece itself: the literal text "[CLS]" (etc.) in
the input is matched as the special token by transformers, whereas SentencePiece
never produces control symbols from text.
"""
from __future__ import annotations

import os
import shutil

from data_pipeline.fileio import write_json_atomic, write_text_atomic
from data_pipeline.text.tokenizer import bert_wordpiece

SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                  "cls_token": "[CLS]", "mask_token": "[MASK]"}


def _bert_template(tokenizer):
  from tokenizers import processors
  cls, sep = tokenizer.special_ids["cls_id"], tokenizer.special_ids["sep_id"]
  return processors.TemplateProcessing(
      single="[CLS] $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])


def export_tokenizer(tokenizer, output_dir: str, model_max_length: int = 512) -> list[str]:
  """Writes transformers-loadable tokenizer files for `tokenizer`; returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  if tokenizer.kind == "wordpiece":
    return _export_wordpiece(tokenizer, output_dir, model_max_length)
  if tokenizer.kind == "sentencepiece":
    return _export_sentencepiece(tokenizer, output_dir, model_max_length)
  raise ValueError(f"cannot export a tokenizer of kind {tokenizer.kind!r}")


def _export_wordpiece(tokenizer, output_dir: str, model_max_length: int) -> list[str]:
  vocab_path = os.path.join(output_dir, "vocab.txt")
  write_text_atomic(vocab_path, "".join(t + "\n" for t in tokenizer.tokens()))
  # The same pipeline as data_pipeline.text.tokenizer.WordPieceTokenizer.
  fast = bert_wordpiece(vocab_path, tokenizer.lowercase)
  fast.post_processor = _bert_template(tokenizer)
  json_path = os.path.join(output_dir, "tokenizer.json")
  write_text_atomic(json_path, fast.to_str())
  config_path = os.path.join(output_dir, "tokenizer_config.json")
  write_json_atomic(config_path, {
      "tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.lowercase,
      "tokenize_chinese_chars": True, "strip_accents": None, "clean_up_tokenization_spaces": False,
      "model_max_length": model_max_length, **SPECIAL_TOKENS})
  return [vocab_path, json_path, config_path]


def _read_spm_proto(path: str):
  from sentencepiece import sentencepiece_model_pb2 as model_pb2
  proto = model_pb2.ModelProto()
  with open(path, "rb") as f:
    proto.ParseFromString(f.read())
  return proto


def _bpe_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
  """Merges that rebuild SentencePiece BPE: every split of a piece into two known
  pieces, ranked by the merged piece's id (SentencePiece's BPE scores are -id)."""
  merges = []
  for piece, piece_id in vocab.items():
    local = [(piece[:i], piece[i:], piece_id) for i in range(1, len(piece))
             if piece[:i] in vocab and piece[i:] in vocab]
    local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
    merges.extend(local)
  merges.sort(key=lambda m: m[2])
  return [(a, b) for a, b, _ in merges]


_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def build_sentencepiece_tokenizer_json(tokenizer):
  """A `tokenizers.Tokenizer` equivalent to our SentencePiece tokenizer, with BERT's template."""
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
  proto = _read_spm_proto(tokenizer.path)
  spec = proto.trainer_spec
  pieces = [(p.piece, p.score) for p in proto.pieces]
  if spec.model_type == 1:  # UNIGRAM
    model = models.Unigram(pieces, unk_id=spec.unk_id, byte_fallback=spec.byte_fallback)
  elif spec.model_type == 2:  # BPE
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    model = models.BPE(vocab, _bpe_merges(vocab), unk_token=spec.unk_piece, fuse_unk=True,
                       byte_fallback=spec.byte_fallback)
  else:
    raise ValueError(f"{tokenizer.path}: SentencePiece model type {spec.model_type} is neither "
                     "unigram nor BPE; it cannot be exported")
  fast = Tokenizer(model)
  steps = []
  charsmap = proto.normalizer_spec.precompiled_charsmap
  if charsmap:
    steps.append(normalizers.Precompiled(charsmap))
  if proto.normalizer_spec.remove_extra_whitespaces:
    # SentencePiece drops leading/trailing whitespace and collapses runs of it.
    steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
  if steps:
    fast.normalizer = normalizers.Sequence(steps)
  prepend = "always" if proto.normalizer_spec.add_dummy_prefix else "never"
  fast.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=prepend)
  fast.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=prepend)
  # Control symbols (BERT's specials) are special tokens; user-defined ones are plain
  # added tokens, which SentencePiece also matches verbatim in the text.
  fast.add_tokens([AddedToken(p.piece, normalized=False, special=p.type == _CONTROL)
                   for p in proto.pieces if p.type in (_CONTROL, _USER_DEFINED)])
  specials = [p.piece for p in proto.pieces if p.type == _CONTROL]
  fast.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
  fast.post_processor = _bert_template(tokenizer)
  return fast


def _export_sentencepiece(tokenizer, output_dir: str, model_max_length: int) -> list[str]:
  fast = build_sentencepiece_tokenizer_json(tokenizer)
  json_path = os.path.join(output_dir, "tokenizer.json")
  write_text_atomic(json_path, fast.to_str())
  config_path = os.path.join(output_dir, "tokenizer_config.json")
  write_json_atomic(config_path, {"tokenizer_class": "PreTrainedTokenizerFast",
                            # BERT reads token types; the generic class omits them otherwise.
                            "model_input_names": ["input_ids", "token_type_ids",
                                                  "attention_mask"],
                            "clean_up_tokenization_spaces": False,
                            "model_max_length": model_max_length, **SPECIAL_TOKENS})
  # The SentencePiece model itself too: transformers reads tokenizer.json, and
  # bert-jax (fine-tuning with --init_from=this directory) reads the .model.
  model_path = os.path.join(output_dir, os.path.basename(tokenizer.path))
  shutil.copyfile(tokenizer.path, model_path)
  return [json_path, config_path, model_path]
