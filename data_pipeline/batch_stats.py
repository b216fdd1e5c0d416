"""Human-readable examples and measured statistics of contract batches (for inspect_data)."""
from __future__ import annotations

import numpy as np

SPECIAL_KEYS = ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")


def render_example(batch: dict, row: int, id_to_token, manifest: dict) -> str:
  """One sequence as text: segment B in {braces}, masked tokens as [MASK->orig] or
  [orig->replacement] (random) or [=orig] (kept), padding omitted."""
  ids = batch["input_ids"][row]
  n = int(batch["attention_mask"][row].sum())
  w = batch["masked_lm_weights"][row] > 0
  masked = dict(zip(batch["masked_lm_positions"][row][w].tolist(),
                    batch["masked_lm_ids"][row][w].tolist()))
  out, in_b = [], False
  for i in range(n):
    tok = id_to_token(int(ids[i]))
    if batch["token_type_ids"][row][i] == 1 and not in_b:
      out.append("{")
      in_b = True
    if i in masked:
      orig = id_to_token(masked[i])
      if ids[i] == manifest["mask_id"]:
        tok = f"[MASK->{orig}]"
      elif ids[i] == masked[i]:
        tok = f"[={orig}]"
      else:
        tok = f"[{orig}->{tok}]"
    out.append(tok)
  if in_b:
    out.append("}")
  label = int(batch["next_sentence_labels"][row])
  return f"label={label} len={n}: " + " ".join(out)


def batch_statistics(batches: list[dict], manifest: dict,
                     chunk_sentences: list[np.ndarray] | None = None) -> dict:
  """Measured rates over the given batches (one JSON-able dict). With `chunk_sentences`
  (per batch, the sentences in each example's chunk) also the NSP rate among chunks of
  two or more sentences (a one-sentence chunk always gets a random B)."""
  cat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  ids = cat["input_ids"]
  w = cat["masked_lm_weights"] > 0
  r, s = np.nonzero(w)
  pos = cat["masked_lm_positions"][r, s]
  orig = cat["masked_lm_ids"][r, s]
  now = ids[r, pos]
  original = ids.copy()
  original[r, pos] = orig
  special = [manifest[k] for k in SPECIAL_KEYS]
  real = cat["attention_mask"] > 0
  maskable = real & ~np.isin(original, special)
  length = real.sum(1)
  max_len = ids.shape[1]
  n_masked = max(int(w.sum()), 1)
  extra = {}
  if chunk_sentences is not None:
    multi = np.concatenate(chunk_sentences) >= 2
    extra = {"multi_sentence_chunk_share": float(multi.mean()),
             "nsp_positive_rate_multi_sentence_chunks": float(
                 np.mean(cat["next_sentence_labels"][multi] == 0)) if multi.any() else 0.0}
  return {
      "sequences": int(len(ids)),
      "mask_rate": float(w.sum() / max(int(maskable.sum()), 1)),
      "mask_frac_mask_token": float(np.sum(now == manifest["mask_id"]) / n_masked),
      "mask_frac_random": float(np.sum((now != manifest["mask_id"]) & (now != orig)) / n_masked),
      "mask_frac_kept": float(np.sum(now == orig) / n_masked),
      "nsp_positive_rate": float(np.mean(cat["next_sentence_labels"] == 0)),
      "short_seq_rate_below_half_length": float(np.mean(length < max_len / 2)),
      "mean_length": float(length.mean()),
      "mean_predictions": float(w.sum(1).mean()),
      "max_seq_length": int(max_len),
      **extra,
  }
