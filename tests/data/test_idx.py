"""IDX files (`sve_jax.data.idx`): read as the upstream Fashion-MNIST reader reads them, and
as an independent writer of the format writes them."""
import gzip
import os
import struct

import numpy as np
import pytest

from sve_jax.data import builders
from sve_jax.data import idx

# IDX type codes and the big-endian dtypes they declare (http://yann.lecun.com/exdb/mnist/).
TYPE_CODES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}



def write_idx(path, array, code, compress=False):
  """The IDX format written by hand: two zero bytes, the type code, the rank, the dims."""
  header = struct.pack('>BBBB', 0, 0, code, array.ndim) + struct.pack(
      f'>{array.ndim}I', *array.shape)
  payload = header + array.astype(TYPE_CODES[code]).tobytes()
  with open(path, 'wb') as f:
    f.write(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize('kind, per_class', [('train', 6000), ('t10k', 1000)])
@pytest.mark.slow  # over 5 s on 2 cores
def test_read_idx_matches_reference_reader(mnist_reader, kind, per_class):
  images, labels = mnist_reader.load_mnist(builders.FASHION_MNIST_DIR, kind=kind)
  ours_images = idx.read_idx(os.path.join(
      builders.FASHION_MNIST_DIR, f'{kind}-images-idx3-ubyte.gz'))
  ours_labels = idx.read_idx(os.path.join(
      builders.FASHION_MNIST_DIR, f'{kind}-labels-idx1-ubyte.gz'))
  assert ours_images.shape == (len(labels), 28, 28) and ours_images.dtype == np.uint8
  np.testing.assert_array_equal(ours_images.reshape(len(labels), 784), images)
  np.testing.assert_array_equal(ours_labels, labels)
  np.testing.assert_array_equal(np.bincount(ours_labels), [per_class] * 10)


@pytest.mark.parametrize('code', sorted(TYPE_CODES))
def test_every_type_code_reads_back_what_was_written(code, tmp_path):
  rng = np.random.default_rng(code)
  for rank in (1, 2, 3):
    shape = tuple(int(d) for d in rng.integers(1, 6, rank))
    dtype = np.dtype(TYPE_CODES[code]).newbyteorder('=')
    if dtype.kind in 'iu':
      info = np.iinfo(dtype)
      array = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    else:
      array = rng.normal(size=shape).astype(dtype)
    for compress in (False, True):
      path = tmp_path / f'{code}_{rank}_{compress}'
      write_idx(path, array, code, compress)
      got = idx.read_idx(path)
      assert got.dtype == array.dtype and got.dtype.isnative
      np.testing.assert_array_equal(got, array)


def test_read_idx_raw_file_and_truncation(tmp_path):
  with gzip.open(os.path.join(builders.FASHION_MNIST_DIR,
                              't10k-labels-idx1-ubyte.gz')) as f:
    raw = f.read()
  (tmp_path / 'labels-idx1-ubyte').write_bytes(raw)
  labels = idx.read_idx(tmp_path / 'labels-idx1-ubyte')
  np.testing.assert_array_equal(labels, np.frombuffer(raw, np.uint8, offset=8))
  (tmp_path / 'short').write_bytes(raw[:-3])
  with pytest.raises(ValueError, match=r'short: IDX header declares shape \(10000,\)'):
    idx.read_idx(tmp_path / 'short')
  (tmp_path / 'text').write_bytes(b'not idx')
  with pytest.raises(ValueError, match=r"text: not an IDX file \(header bytes b'not '\)"):
    idx.read_idx(tmp_path / 'text')


def test_find_idx_file_prefers_the_raw_file(tmp_path):
  (tmp_path / 'a.gz').write_bytes(b'')
  assert idx.find_idx_file(tmp_path, 'a') == str(tmp_path / 'a.gz')
  (tmp_path / 'a').write_bytes(b'')
  assert idx.find_idx_file(tmp_path, 'a') == str(tmp_path / 'a')
  with pytest.raises(FileNotFoundError, match=r'expected IDX file b or b\.gz'):
    idx.find_idx_file(tmp_path, 'b')
