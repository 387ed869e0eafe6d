"""A cheap fingerprint of input files, so prepared data are not reused after the files change."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable


def fingerprint(paths: Iterable[str | os.PathLike]) -> str:
  """A short hash of the paths, sizes and modification times of files.

  Cheap (no file contents are read); changes when a file is replaced or edited,
  so prepared data derived from the files is not reused by mistake.
  """
  digest = hashlib.sha256()
  for path in paths:
    stat = os.stat(path)
    digest.update(f'{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()[:12]
