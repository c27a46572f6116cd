"""Paths: local vs URL (gs://, s3://, ...), atomic writes, and input-file globs.

`is_url` is the one test every module uses to tell local paths and URLs apart.

Local paths go through `os`/`open` (expanded, made absolute where a library needs it); URLs go
through `etils.epath` / `tf.io.gfile`, which speak GCS.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from collections.abc import Iterator

from etils import epath

from bert_jax.errors import DataError


def is_url(path) -> bool:
  """True for `scheme://...` (gs://bucket/dir), False for a local path (str or PathLike)."""
  return "://" in os.fspath(path)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[epath.Path]:
  """Yields a temporary name beside `path` to write to; renamed to `path` when the block ends
  normally, removed when it raises. A reader never sees a half-written file."""
  path = epath.Path(path)
  tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    yield tmp
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def atomic_write(path, data: str | bytes) -> str:
  """Writes `data` to `path` (local or URL) atomically (`atomic_path`); returns the path."""
  with atomic_path(path) as tmp:
    if isinstance(data, bytes):
      tmp.write_bytes(data)
    else:
      tmp.write_text(data, encoding="utf-8")
  return os.fspath(path)


# ---- input files ------------------------------------------------------------------------------
def expand_inputs(patterns: str) -> list[str]:
  """Sorted files matching comma-separated globs; DataError if none match or all are empty."""
  files = []
  for pattern in [p.strip() for p in patterns.split(",") if p.strip()]:
    matched = sorted(_glob(pattern))
    if not matched:
      raise DataError(f"--input {pattern}: no such file; pass an existing text file or glob")
    files.extend(m for m in matched if epath.Path(m).is_file())
  if not files:
    raise DataError(f"--input {patterns!r}: no files; pass text files (one sentence per line)")
  if all(file_size(f) == 0 for f in files):
    raise DataError(f"--input {patterns}: the input is empty; pass text files with one sentence "
                    f"per line and a blank line between documents")
  return sorted(dict.fromkeys(files))


def _glob(pattern: str) -> list[str]:
  if is_url(pattern):  # gs://bucket/dir/*.txt
    import tensorflow as tf
    return tf.io.gfile.glob(pattern)
  return glob.glob(os.path.expanduser(pattern))


def file_size(path: str) -> int:
  return epath.Path(path).stat().length if is_url(path) else os.path.getsize(path)

