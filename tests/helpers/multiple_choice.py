"""Multiple-choice files in SWAG's CSV layout (as transformers' run_swag reads them)."""

SWAG_HEADER = ("video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,"
               "ending3,label")


def write_swag(path, rows, labelled=True):
  """rows: (sent1, sent2, [4 endings], label); `labelled=False` writes a test file."""
  header = SWAG_HEADER if labelled else SWAG_HEADER[:-len(",label")]
  with open(path, "w") as f:
    f.write(header + "\n")
    for i, (s1, s2, endings, label) in enumerate(rows):
      cells = [f"anetv_{i}", str(100 + i), f"{s1} {s2}", s1, s2, "gold"] + list(endings)
      f.write(",".join(cells + ([str(label)] if labelled else [])) + "\n")
  return str(path)
