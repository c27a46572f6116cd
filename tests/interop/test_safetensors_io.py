"""bert_jax.interop.safetensors_io: the safetensors library underneath, our messages on top."""

import json
import os
import re
import struct

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from bert_jax.interop import safetensors_io


def _tensors():
  return {
      "w": np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not C-contiguous
      "bf": (np.arange(5, dtype=np.float32) / 3).astype(ml_dtypes.bfloat16),
      "h": np.ones((2, 2), np.float16),
      "ids": np.array([1, -2, 3], np.int64),
      "step": np.array(7, np.int32),  # 0-d stays 0-d
      "mask": np.array([True, False]),
      "empty": np.zeros((0, 3), np.float32),
  }


def _assert_same(got, want):
  assert sorted(got) == sorted(want)
  for k, v in want.items():
    assert got[k].dtype == v.dtype, k
    assert got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v)


def test_round_trip_keeps_dtypes_shapes_and_values(tmp_path):
  f = tmp_path / "t.safetensors"
  safetensors_io.save(_tensors(), str(f), metadata={"format": "pt"})
  _assert_same(safetensors_io.load(str(f)), _tensors())
  assert os.listdir(tmp_path) == ["t.safetensors"]  # no temporary left behind
  lazy = safetensors_io.lazy_load(str(f))
  assert lazy.shapes["w"] == (4, 3) and lazy.shapes["step"] == ()
  assert lazy.dtypes["bf"] == "BF16" and lazy.metadata == {"format": "pt"}
  assert lazy["bf"].dtype == ml_dtypes.bfloat16
  with pytest.raises(KeyError):
    lazy["nope"]


def test_the_library_and_we_read_each_others_files(tmp_path):
  ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
  safetensors_io.save(_tensors(), str(ours))
  with safetensors.safe_open(str(ours), framework="numpy") as f:
    _assert_same({k: f.get_tensor(k) for k in f.keys()}, _tensors())
  safetensors.numpy.save_file({k: np.ascontiguousarray(v) if v.ndim else v
                               for k, v in _tensors().items()}, str(theirs))
  _assert_same(safetensors_io.load(str(theirs)), _tensors())


def test_read_header_offsets_match_the_file(tmp_path):
  f = tmp_path / "t.safetensors"
  safetensors_io.save(_tensors(), str(f), metadata={"format": "pt"})
  header, offset = safetensors_io.read_header(str(f))
  raw = f.read_bytes()
  (n,) = struct.unpack("<Q", raw[:8])
  on_disk = json.loads(raw[8:8 + n])
  on_disk.pop("__metadata__")
  assert offset == 8 + n
  assert header == on_disk


def test_unwritable_dtype_names_the_tensor_and_writes_nothing(tmp_path):
  f = tmp_path / "t.safetensors"
  with pytest.raises(safetensors_io.SafetensorsError,
                     match="cannot write 'z': dtype complex128 has no safetensors name"):
    safetensors_io.save({"a": np.zeros(2, np.float32), "z": np.zeros(2, np.complex128)}, str(f))
  assert os.listdir(tmp_path) == []


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
  f = tmp_path / "t.safetensors"
  safetensors_io.save({"a": np.zeros(2, np.float32)}, str(f))
  before = f.read_bytes()

  def half_then_fail(tensors, filename, metadata=None):
    with open(filename, "wb") as out:
      out.write(b"partial")
    raise OSError("disk full")

  monkeypatch.setattr(safetensors.numpy, "save_file", half_then_fail)
  with pytest.raises(OSError, match="disk full"):
    safetensors_io.save({"a": np.ones(2, np.float32)}, str(f))
  assert f.read_bytes() == before
  assert os.listdir(tmp_path) == ["t.safetensors"]


def test_url_paths_go_through_a_local_copy(tmp_path, monkeypatch):
  # No object store here: treat local paths as URLs, so the epath copy branches run.
  monkeypatch.setattr(safetensors_io.paths, "is_url", lambda p: True)
  f = tmp_path / "t.safetensors"
  safetensors_io.save(_tensors(), str(f))
  lazy = safetensors_io.lazy_load(str(f))
  _assert_same(dict(lazy), _tensors())
  assert safetensors_io.read_header(str(f))[0]["bf"]["dtype"] == "BF16"
  f.write_bytes(f.read_bytes()[:5])
  with pytest.raises(safetensors_io.SafetensorsError,
                     match="^" + re.escape(f"{f}: truncated safetensors file")):
    safetensors_io.load(str(f))


def _write(f, header, data=b""):
  blob = header if isinstance(header, bytes) else json.dumps(header).encode()
  f.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


@pytest.mark.parametrize("header, data, message", [
    (b"{not json", b"", "safetensors header is not valid JSON; the file is corrupt"),
    (b"[1, 2]", b"", "safetensors header is not a JSON object"),
    ({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4,
     "tensor 'a' has a malformed header entry {'dtype': 'X9'"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "tensor 'a' has a malformed header entry"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4,
     "tensor 'a' header says shape [2] F32 (8 bytes) but offsets [0, 4]; the header lies"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8,
     "tensor 'a' ends at byte 16 of the data but the file holds 8; the file is truncated"),
    # Sound entries, but bytes the header does not account for: the library's reason, quoted.
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8,
     "not a valid safetensors file (incomplete metadata, file not fully covered); re-download"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, header, data, message):
  f = tmp_path / "bad.safetensors"
  _write(f, header, data)
  with pytest.raises(safetensors_io.SafetensorsError) as e:
    safetensors_io.load(str(f))
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"{f}: ") and message in msg, msg


def test_header_size_errors(tmp_path):
  f = tmp_path / "bad.safetensors"
  f.write_bytes(b"\1\2\3")
  with pytest.raises(safetensors_io.SafetensorsError,
                     match=r"truncated safetensors file \(3 bytes, no header\)"):
    safetensors_io.load(str(f))
  f.write_bytes(struct.pack("<Q", 64) + b"{}")
  with pytest.raises(safetensors_io.SafetensorsError,
                     match="header claims 64 bytes but the file has 10; the file is truncated"):
    safetensors_io.load(str(f))
  f.write_bytes(struct.pack("<Q", safetensors_io.MAX_HEADER_BYTES + 1) + b" " * 8)
  with pytest.raises(safetensors_io.SafetensorsError, match="header claims 100000001 bytes"):
    safetensors_io.load(str(f))


def test_missing_file_is_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError):
    safetensors_io.lazy_load(str(tmp_path / "nope.safetensors"))
