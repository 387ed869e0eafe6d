"""IDX files, the MNIST / Fashion-MNIST format: `read_idx`, `find_idx_file`."""

from __future__ import annotations

import gzip
import os

import numpy as np

# IDX type codes (http://yann.lecun.com/exdb/mnist/): data are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype('u1'),
    0x09: np.dtype('i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}
_GZIP_MAGIC = b'\x1f\x8b'


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (the MNIST / Fashion-MNIST format), raw or gzipped.

  Gzip is recognised by its magic bytes, not by the file name.

  Args:
    path: the file.

  Returns:
    An array with the dtype and shape that the IDX header declares.

  Raises:
    ValueError: if the header is not IDX or the payload has the wrong size.
  """
  with open(path, 'rb') as f:
    data = f.read()
  if data[:2] == _GZIP_MAGIC:
    data = gzip.decompress(data)
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise ValueError(f'{path}: not an IDX file (header bytes {data[:4]!r}).')
  dtype, ndim = _IDX_DTYPES[data[2]], data[3]
  header_size = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, offset=4))
  expected_bytes = header_size + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected_bytes:
    raise ValueError(
        f'{path}: IDX header declares shape {shape} of {dtype} '
        f'({expected_bytes} bytes with header) but the file has {len(data)} bytes.')
  return np.frombuffer(data, dtype, offset=header_size).reshape(shape).astype(
      dtype.newbyteorder('='))


def find_idx_file(directory: str | os.PathLike, stem: str) -> str:
  """Returns `directory/stem`, or `directory/stem.gz` when only that exists."""
  for name in (stem, stem + '.gz'):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f'{directory}: expected IDX file {stem} or {stem}.gz (Debian package '
      '`dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist).')
