"""Local paths and URLs (gs://, s3://, ...): the one test every module uses to tell them apart.

Local paths go through `os`/`open` (expanded, made absolute where a library needs it); URLs go
through `etils.epath` / `tf.io.gfile`, which speak GCS.
"""

from __future__ import annotations

import os


def is_url(path) -> bool:
  """True for `scheme://...` (gs://bucket/dir), False for a local path (str or PathLike)."""
  return "://" in os.fspath(path)
