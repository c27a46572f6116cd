"""safetensors read/write through the `safetensors` library, with one-line errors.

Reading: `safetensors.safe_open(path, framework="numpy")` memory-maps the file and checks the
whole header (dtypes, shapes, offsets, that the data section is covered exactly) before it
serves any tensor; each `get_tensor` then copies out that one tensor. BF16 tensors come back as
`ml_dtypes.bfloat16` arrays: the library builds them with `np.frombuffer(..., dtype="bfloat16")`,
a dtype name numpy knows only once ml_dtypes has been imported (hence the import below).
Writing: `safetensors.numpy.save_file`, which takes ml_dtypes.bfloat16 arrays as BF16.
gs:// and other URLs: safe_open and save_file need a local file, so a URL is copied to (or
written from) a local temporary file.

Errors are SafetensorsError messages naming the file and, where the header allows, the tensor.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping

import ml_dtypes  # noqa: F401 - registers numpy's "bfloat16" dtype, which safe_open relies on
import numpy as np
import safetensors
import safetensors.numpy
from etils import epath

from bert_jax import paths
from bert_jax.errors import UserError

MAX_HEADER_BYTES = 100_000_000  # the library's own bound (larger: "header too large")
_COPY_CHUNK = 64 * 1024 * 1024

# Bits per element of every dtype the library knows; used only to word errors (_explain) and to
# report byte offsets (read_header), never to read data.
_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
         "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
         "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
         "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


class SafetensorsError(UserError):
  pass


class LazyTensors(Mapping):
  """The tensors of one safetensors file: names and shapes up front, each value read on access.

  The file stays memory-mapped by the library while this object lives; `self[name]` copies that
  one tensor out into a numpy array (ml_dtypes.bfloat16 for BF16).
  """

  def __init__(self, where: str, handle):
    self.where = where
    self._handle = handle
    self.shapes: dict[str, tuple[int, ...]] = {
        k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    self.dtypes: dict[str, str] = {k: handle.get_slice(k).get_dtype() for k in handle.keys()}
    self.metadata: dict[str, str] = dict(handle.metadata() or {})

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self.shapes:
      raise KeyError(name)
    return self._handle.get_tensor(name)

  def __iter__(self) -> Iterator[str]:
    return iter(self.shapes)

  def __len__(self) -> int:
    return len(self.shapes)


@contextlib.contextmanager
def _local_file(path) -> Iterator[str]:
  """A local filename holding `path`'s bytes: the path itself, or a temporary copy of a URL."""
  if not paths.is_url(path):
    yield os.fspath(path)
    return
  with tempfile.TemporaryDirectory(prefix="bert_jax-safetensors-") as d:
    local = os.path.join(d, "model.safetensors")
    with epath.Path(path).open("rb") as src, open(local, "wb") as dst:
      shutil.copyfileobj(src, dst, _COPY_CHUNK)
    yield local


def lazy_load(path) -> LazyTensors:
  """Opens a safetensors file (local or URL) lazily; a bad file is a one-line SafetensorsError."""
  where = str(epath.Path(path))
  with _local_file(path) as local:
    try:
      handle = safetensors.safe_open(local, framework="numpy")
    except safetensors.SafetensorError as e:
      raise _explain(local, where, str(e)) from None
    # For a URL the temporary copy is deleted on leaving this block; the library's memory map
    # keeps its bytes readable (POSIX semantics) for as long as `handle` lives.
  return LazyTensors(where, handle)


def read_header(path) -> tuple[dict, int]:
  """Returns (header dict without __metadata__, byte offset of the data section).

  Built from what the library reports after it has validated the file: tensors lie back to back
  in offset order and exactly cover the data section, so offsets follow from dtypes and shapes.
  """
  where = str(epath.Path(path))
  with _local_file(path) as local:
    try:
      with safetensors.safe_open(local, framework="numpy") as f:
        names = f.offset_keys()
        slices = {k: f.get_slice(k) for k in names}
        header, offset = {}, 0
        for k in names:
          dtype, shape = slices[k].get_dtype(), list(slices[k].get_shape())
          nbytes = int(np.prod(shape, dtype=np.int64)) * _BITS[dtype] // 8
          header[k] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
          offset += nbytes
    except safetensors.SafetensorError as e:
      raise _explain(local, where, str(e)) from None
    return header, os.path.getsize(local) - offset


def load(path: str) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file as numpy arrays (read through the library's memory map)."""
  return dict(lazy_load(path))


def save(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None):
  """Writes tensors (numpy, incl. ml_dtypes.bfloat16) as safetensors, atomically.

  Local files are written under a temporary name in the same directory and renamed into place.
  URLs are written locally and then uploaded in one stream: object stores (gs://, s3://) publish
  an object only when its upload completes, and their "rename" is a copy, so no temporary name.
  """
  arrays = {}
  for name in sorted(tensors):
    a = np.asarray(tensors[name], order="C")  # dense, as the library writes raw buffers; keeps 0-d
    try:  # the library's own dtype check, done per tensor so the error can name the tensor
      safetensors.TensorSpec(dtype=a.dtype.name, shape=a.shape, data_ptr=a.ctypes.data,
                             data_len=a.nbytes)
    except safetensors.SafetensorError:
      raise SafetensorsError(f"cannot write {name!r}: dtype {a.dtype} has no safetensors "
                             "name") from None
    arrays[name] = a
  metadata = dict(metadata) if metadata else None
  if not paths.is_url(path):
    with paths.atomic_path(os.fspath(path)) as tmp:
      safetensors.numpy.save_file(arrays, os.fspath(tmp), metadata=metadata)
    return
  with tempfile.TemporaryDirectory(prefix="bert_jax-safetensors-") as d:
    local = os.path.join(d, "model.safetensors")
    safetensors.numpy.save_file(arrays, local, metadata=metadata)
    with open(local, "rb") as src, epath.Path(path).open("wb") as dst:
      shutil.copyfileobj(src, dst, _COPY_CHUNK)


# Why this reads the header itself: the library's errors say what kind of thing is wrong but not
# where ("invalid shape, data type, or offset for tensor", "incomplete metadata, file not fully
# covered", "header too large" - no tensor name, no sizes), and it has no call that returns the
# header of a file it refuses. So after safe_open has refused a file, this looks at the header
# only to word the error: which tensor, which sizes. It never accepts a file or reads tensor data.
def _explain(local: str, where: str, reason: str) -> SafetensorsError:
  size = os.path.getsize(local)
  with open(local, "rb") as f:
    raw = f.read(8)
    if len(raw) < 8:
      return SafetensorsError(f"{where}: truncated safetensors file ({size} bytes, no header); "
                              "re-download or re-export it")
    (n,) = struct.unpack("<Q", raw)
    if n > MAX_HEADER_BYTES or n > size - 8:
      return SafetensorsError(f"{where}: safetensors header claims {n} bytes but the file has "
                              f"{size}; the file is truncated or not safetensors")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
      return SafetensorsError(f"{where}: safetensors header is not valid JSON; the file is "
                              "corrupt or not safetensors")
  if not isinstance(header, dict):
    return SafetensorsError(f"{where}: safetensors header is not a JSON object")
  header.pop("__metadata__", None)
  data_len = size - 8 - n
  for name, info in header.items():
    try:
      bits = _BITS[info["dtype"]]
      shape = tuple(int(d) for d in info["shape"])
      begin, end = (int(x) for x in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
      return SafetensorsError(f"{where}: tensor {name!r} has a malformed header entry "
                              f"{info!r}")
    need = int(np.prod(shape, dtype=np.int64)) * bits // 8
    if any(d < 0 for d in shape) or not 0 <= begin <= end or end - begin != need:
      return SafetensorsError(f"{where}: tensor {name!r} header says shape {list(shape)} "
                              f"{info['dtype']} ({need} bytes) but offsets [{begin}, {end}]; "
                              "the header lies, the file is corrupt")
    if end > data_len:
      return SafetensorsError(f"{where}: tensor {name!r} ends at byte {end} of the data but "
                              f"the file holds {data_len}; the file is truncated")
  reason = reason.removeprefix("Error while deserializing header: ")
  return SafetensorsError(f"{where}: not a valid safetensors file ({reason}); re-download or "
                          "re-export it")
