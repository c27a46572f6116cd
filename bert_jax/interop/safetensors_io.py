"""safetensors read/write with every header field checked before any byte is trusted.

Format: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data.
We read it ourselves (numpy + ml_dtypes for bfloat16) so that a truncated file or a header that
lies about sizes or offsets is a one-line error naming the file and the tensor.
"""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
from etils import epath

from bert_jax import paths

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's own bound

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
  pass


def read_header(path) -> tuple[dict, int]:
  """Returns (header dict without __metadata__, byte offset of the data section)."""
  path = epath.Path(path)
  size = path.stat().length
  with path.open("rb") as f:
    raw = f.read(8)
    if len(raw) < 8:
      raise SafetensorsError(f"{path}: truncated safetensors file ({size} bytes, no header); "
                             "re-download or re-export it")
    (n,) = struct.unpack("<Q", raw)
    if n > MAX_HEADER_BYTES or n > size - 8:
      raise SafetensorsError(f"{path}: safetensors header claims {n} bytes but the file has "
                             f"{size}; the file is truncated or not safetensors")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
      raise SafetensorsError(f"{path}: safetensors header is not valid JSON; the file is "
                             "corrupt or not safetensors") from None
  if not isinstance(header, dict):
    raise SafetensorsError(f"{path}: safetensors header is not a JSON object")
  header.pop("__metadata__", None)
  data_len = size - 8 - n
  for name, info in header.items():
    try:
      dtype = _DTYPES[info["dtype"]]
      shape = tuple(int(d) for d in info["shape"])
      begin, end = (int(x) for x in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
      raise SafetensorsError(f"{path}: tensor {name!r} has a malformed header entry "
                             f"{info!r}") from None
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if any(d < 0 for d in shape) or not 0 <= begin <= end or end - begin != need:
      raise SafetensorsError(f"{path}: tensor {name!r} header says shape {list(shape)} "
                             f"{info['dtype']} ({need} bytes) but offsets [{begin}, {end}]; "
                             "the header lies, the file is corrupt")
    if end > data_len:
      raise SafetensorsError(f"{path}: tensor {name!r} ends at byte {end} of the data but the "
                             f"file holds {data_len}; the file is truncated")
  return header, 8 + n


def load(path: str) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file as numpy arrays (memory-mapped, read-only)."""
  header, offset = read_header(path)
  if not paths.is_url(path):
    mm = np.memmap(path, dtype=np.uint8, mode="r")
  else:  # gs:// and friends: read it whole
    mm = np.frombuffer(epath.Path(path).read_bytes(), dtype=np.uint8)
  out = {}
  for name, info in header.items():
    begin, end = info["data_offsets"]
    buf = mm[offset + begin: offset + end]
    out[name] = buf.view(_DTYPES[info["dtype"]]).reshape(info["shape"])
  return out


def save(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None):
  """Writes tensors (numpy, incl. ml_dtypes.bfloat16) as safetensors, sorted by name."""
  header: dict = {}
  if metadata:
    header["__metadata__"] = dict(metadata)
  offset = 0
  arrays = []
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    if a.dtype not in _NAMES:
      raise SafetensorsError(f"cannot write {name!r}: dtype {a.dtype} has no safetensors name")
    header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
    arrays.append(a)
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # align the data section to 8 bytes
  with epath.Path(path).open("wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for a in arrays:
      f.write(a.tobytes())
