"""Small grey image sets on this machine: `fashion_mnist_local` (IDX files) and `digits_ood`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from sve_jax.data import idx
from sve_jax.data import options

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_LABELS = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                        'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')


class _GreyImageBuilder:
  """What the grey image builders share (mixed in before `GeneratorBasedBuilder`).

  Features: `image` `(SIDE, SIDE, 1)` uint8, `label` (`LABEL_NAMES`) and `id` (`ID_DOC`);
  `_generate_examples` turns `(N, SIDE, SIDE)` images and `(N,)` labels into examples keyed
  by their index, which is also their `id`.
  """
  SIDE: int
  LABEL_NAMES: Sequence[str]
  ID_DOC: str
  DESCRIPTION: str
  HOMEPAGE: str | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(self.SIDE, self.SIDE, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=list(self.LABEL_NAMES)),
            'id': tfds.features.Scalar(np.int64, doc=self.ID_DOC),
        }),
        supervised_keys=('image', 'label'),
        homepage=self.HOMEPAGE,
    )

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image[..., None], 'label': int(label), 'id': i}


@dataclasses.dataclass(eq=False)
class FashionMnistConfig(tfds.core.BuilderConfig):
  """Options of `fashion_mnist_local`.

  Attributes:
    idx_dir: folder with the four IDX files (raw or `.gz`).
    max_examples_per_split: keep only the first N examples of each IDX file.
  """
  idx_dir: str = FASHION_MNIST_DIR
  max_examples_per_split: int | None = None


class FashionMnistLocal(_GreyImageBuilder, tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [FashionMnistConfig(name='default')]
  OPTIONS_CLASS = FashionMnistConfig
  IDX_STEMS = {'train': 'train', 'test': 't10k'}
  SIDE, LABEL_NAMES, ID_DOC = 28, FASHION_MNIST_LABELS, 'index in the IDX file'
  DESCRIPTION = ('Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 '
                 'clothing classes, 60k train / 10k test, from local IDX '
                 'files; feature `id` is the index in the IDX file.')
  HOMEPAGE = 'https://github.com/zalandoresearch/fashion-mnist'

  @classmethod
  def make_config(cls, **values) -> FashionMnistConfig:
    return options.default_with(cls, values)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(*read_fashion_mnist(
                self.builder_config.idx_dir, split,
                self.builder_config.max_examples_per_split))
            for split in self.IDX_STEMS}


def read_fashion_mnist(idx_dir: str, split: str,
                       max_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Images `(N, 28, 28)` uint8 and labels `(N,)` of one Fashion-MNIST split.

  Raises:
    ValueError: naming the files if their shapes or counts do not match.
  """
  stem = FashionMnistLocal.IDX_STEMS[split]
  image_path = idx.find_idx_file(idx_dir, f'{stem}-images-idx3-ubyte')
  label_path = idx.find_idx_file(idx_dir, f'{stem}-labels-idx1-ubyte')
  images, labels = idx.read_idx(image_path), idx.read_idx(label_path)
  if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
    raise ValueError(f'{image_path} {images.shape} and {label_path} {labels.shape}: '
                     'expected (N, 28, 28) images and N labels.')
  return images[:max_examples], labels[:max_examples]


class DigitsOod(_GreyImageBuilder, tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 1,797 8x8 handwritten digits, as an OOD image set."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  SIDE, LABEL_NAMES, ID_DOC = 8, tuple(str(d) for d in range(10)), 'index in load_digits'
  DESCRIPTION = ('UCI optical digits bundled with scikit-learn (load_digits): '
                 '1,797 8x8 images, grey levels 0..16 scaled to 0..255. '
                 'Split `test` only.')

  def _split_generators(self, dl_manager):
    del dl_manager
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    return {'test': self._generate_examples(digits_to_uint8(digits.images), digits.target)}


def digits_to_uint8(images: np.ndarray) -> np.ndarray:
  """Scales `load_digits` grey levels 0..16 to uint8 0..255."""
  return np.round(np.asarray(images) * (255 / 16)).astype(np.uint8)
