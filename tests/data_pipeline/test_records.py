"""Token pages on disk: any coordinate range reads back exactly, across pages and shards."""
import numpy as np
import pickle

from data_pipeline import records


def _write_shards(tmp_path, sizes, page_tokens, dtype=np.uint16):
  rng = np.random.default_rng(0)
  paths, streams = [], []
  for i, docs in enumerate(sizes):
    path = str(tmp_path / f"s{i}.array_record")
    writer = records.PageWriter(path, dtype, page_tokens)
    tokens = [rng.integers(0, 60000, n).astype(dtype) for n in docs]
    for t in tokens:
      writer.write(t)
    writer.close()
    assert writer.num_tokens == sum(docs)
    paths.append(path)
    streams.append(np.concatenate(tokens))
  return paths, np.concatenate(streams)


def test_ranges_read_back_across_pages_and_shards(tmp_path):
  # Page size 7 so ranges cross several pages; shard ends leave short last pages.
  sizes = [[5, 30, 2], [1], [64, 9, 13]]
  paths, stream = _write_shards(tmp_path, sizes, page_tokens=7)
  reader = records.TokenReader(paths, [sum(s) for s in sizes], "uint16", 7)
  assert reader.num_tokens == len(stream)
  shard_start = np.cumsum([0] + [sum(s) for s in sizes])
  rng = np.random.default_rng(1)
  starts, lengths = [], []
  for _ in range(300):  # Ranges inside one shard (a document never crosses shards).
    s = rng.integers(0, len(sizes))
    lo = rng.integers(shard_start[s], shard_start[s + 1])
    starts.append(lo)
    lengths.append(rng.integers(0, shard_start[s + 1] - lo + 1))
  buffer, offsets = reader.gather(np.array(starts), np.array(lengths))
  for lo, n, off in zip(starts, lengths, offsets):
    np.testing.assert_array_equal(buffer[off:off + n], stream[lo:lo + n])
  # Pickles without open readers (grain worker processes), and reads again after.
  again = pickle.loads(pickle.dumps(reader))
  buffer, offsets = again.gather(np.array(starts[:5]), np.array(lengths[:5]))
  for lo, n, off in zip(starts[:5], lengths[:5], offsets):
    np.testing.assert_array_equal(buffer[off:off + n], stream[lo:lo + n])


def test_int32_tokens_and_one_page_per_record(tmp_path):
  paths, stream = _write_shards(tmp_path, [[3, 4, 5]], page_tokens=4, dtype=np.int32)
  from array_record.python.array_record_module import ArrayRecordReader
  reader = ArrayRecordReader(paths[0])
  assert reader.num_records() == 3  # 12 tokens in pages of 4
  tokens = records.TokenReader(paths, [12], "int32", 4)
  buffer, offsets = tokens.gather(np.array([0]), np.array([12]))
  np.testing.assert_array_equal(buffer[offsets[0]:offsets[0] + 12], stream)
