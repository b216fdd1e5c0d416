"""Atomic writes: the file appears whole or not at all; private names for shared files."""
import os

import numpy as np
import pytest

from data_pipeline import fileio


def test_a_failed_write_leaves_the_old_file_and_a_good_one_replaces_it(tmp_path):
  path = str(tmp_path / "a.json")
  fileio.write_json_atomic(path, {"答案": "北京"})
  assert open(path, encoding="utf-8").read() == '{\n  "答案": "北京"\n}\n'
  with pytest.raises(RuntimeError):
    with fileio.atomic_path(path) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise RuntimeError("crash")
  assert "北京" in open(path, encoding="utf-8").read()
  fileio.write_text_atomic(path, "new", private=True)
  assert open(path).read() == "new"


def test_private_names_and_suffixes(tmp_path):
  path = str(tmp_path / "x.index.npz")
  with fileio.atomic_path(path, private=True, suffix=".npz") as tmp:
    assert tmp == f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, a=np.arange(3))  # np.savez keeps a name ending in .npz as it is
  assert sorted(os.listdir(tmp_path)) == ["x.index.npz"]
  with np.load(path) as data:
    assert data["a"].tolist() == [0, 1, 2]
