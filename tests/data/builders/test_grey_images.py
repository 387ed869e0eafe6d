"""The grey image builders: `fashion_mnist_local` against the upstream reader, `digits_ood`
against scikit-learn."""
import os
import shutil

import numpy as np
import pytest

from sve_jax import data
from sve_jax.data import builders

from conftest import all_examples




def test_fashion_mnist_builder_reads_back(tmp_path, mnist_reader):
  dataset = data.get_dataset(
      {'name': 'fashion_mnist_local', 'max_examples_per_split': 200}, str(tmp_path))
  assert dataset.label_names == builders.FASHION_MNIST_LABELS and dataset.num_classes == 10
  for role, kind in (('train', 'train'), ('test', 't10k')):
    images, labels = mnist_reader.load_mnist(builders.FASHION_MNIST_DIR, kind=kind)
    examples = all_examples(dataset.splits[role])
    assert sorted(ex['id'] for ex in examples) == list(range(200))
    for ex in examples:
      assert ex['image'].shape == (28, 28, 1) and ex['image'].dtype == np.uint8
      np.testing.assert_array_equal(ex['image'].ravel(), images[ex['id']])
      assert ex['label'] == labels[ex['id']]


def test_read_fashion_mnist_checks_the_pair_of_files(tmp_path):
  for name in ('t10k-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'):
    shutil.copy(os.path.join(builders.FASHION_MNIST_DIR, name), tmp_path / name)
  (tmp_path / 't10k-labels-idx1-ubyte.gz').symlink_to(tmp_path / 'train-labels-idx1-ubyte.gz')
  with pytest.raises(ValueError, match=r'\(10000, 28, 28\) and .* \(60000,\): expected'):
    builders.read_fashion_mnist(str(tmp_path), 'test')


def test_digits_to_uint8_spans_the_byte_range():
  levels = np.arange(17, dtype=float)
  scaled = builders.digits_to_uint8(levels)
  assert scaled.dtype == np.uint8 and scaled[0] == 0 and scaled[-1] == 255
  np.testing.assert_array_equal(scaled, np.round(levels * 255 / 16))


def test_digits_ood_matches_sklearn(shared_data_dir):
  from sklearn.datasets import load_digits
  digits = load_digits()
  dataset = data.get_dataset({'name': 'digits_ood'}, shared_data_dir)
  examples = all_examples(dataset.splits['test'])
  assert sorted(ex['id'] for ex in examples) == list(range(1797))
  for ex in examples[:100]:
    assert ex['image'].shape == (8, 8, 1) and ex['image'].dtype == np.uint8
    np.testing.assert_allclose(ex['image'][..., 0].astype(float) * 16 / 255,
                               digits.images[ex['id']], atol=8 / 255)
    assert ex['label'] == digits.target[ex['id']]
