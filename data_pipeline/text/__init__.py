"""Text helpers shared by pretraining data and fine-tuning: tokenizers and scripts.

  tokenizer.py         the one tokenizer interface (SentencePiece `.model`, WordPiece
                       `vocab.txt`): ids, ids with character offsets (Chinese word starts,
                       QA answers), special ids, word-start tables; training both kinds.
  hf_tokenizer.py      export as Hugging Face tokenizer files (tokenizer.json and configs).
  scripts.py           script-aware rules: sentence splitting and line joining for Latin
                       and CJK text, optional NFKC, the CJK character classes and share.
  word_segmentation.py Chinese word starts (jieba) for whole-word masking.

Never imports jax.
"""
