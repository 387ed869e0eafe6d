"""tfds builders for the data that exist on this machine, readable without TF.

Every builder writes `array_record` files (`FILE_FORMAT`) and uses only features whose NumPy
encode/decode paths need no TensorFlow: `Tensor` (uint8 images, stored raw), `Text` (UTF-8
bytes on disk, returned as `bytes`), `ClassLabel` and `Scalar`. `tfds.features.Image` is not
used: its encoder calls TensorFlow.

Prepare once with `builder.download_and_prepare()` into a `data_dir`; read back with
`builder.as_data_source()` or `tfds.data_source(name, data_dir=...)`.

A builder that takes options declares them once, as the fields of its config dataclass
(`OPTIONS_CLASS`; see `sve_jax.data.options`), and makes its config with `make_config`.
Builders whose data come from user files (`csv_text`, `image_folder`) name the config by a
hash of its values and of the files' sizes and modification times, so a changed file or
option prepares a new copy instead of reusing a stale one.

One module per family:

* `csv_text`: `csv_text` (a user's table files) and `tweet_sentiment` (one such table);
* `ood_text`: `ood_text` (standard-library docstrings) and `fortunes_text` (fortune
  cookies: near-OOD informal text);
* `grey_images`: `fashion_mnist_local` (IDX files) and `digits_ood` (scikit-learn's digits);
* `image_folder`: `image_folder` (a folder with one subfolder per class).

Adding a builder: write its module here, add its class to `LOCAL_BUILDERS`, and test that it
reads back what its source holds (`tests/data/builders/test_<module>.py`).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from sve_jax.data.builders.csv_text import AGREEMENT_FEATURE
from sve_jax.data.builders.csv_text import CsvText
from sve_jax.data.builders.csv_text import CsvTextConfig
from sve_jax.data.builders.csv_text import TWEET_LABELS
from sve_jax.data.builders.csv_text import TweetSentiment
from sve_jax.data.builders.csv_text import tweet_corpus_path
from sve_jax.data.builders.grey_images import DigitsOod
from sve_jax.data.builders.grey_images import FASHION_MNIST_DIR
from sve_jax.data.builders.grey_images import FASHION_MNIST_LABELS
from sve_jax.data.builders.grey_images import FashionMnistConfig
from sve_jax.data.builders.grey_images import FashionMnistLocal
from sve_jax.data.builders.grey_images import digits_to_uint8
from sve_jax.data.builders.grey_images import read_fashion_mnist
from sve_jax.data.builders.image_folder import ImageFolder
from sve_jax.data.builders.image_folder import ImageFolderConfig
from sve_jax.data.builders.ood_text import FortunesText
from sve_jax.data.builders.ood_text import FortunesTextConfig
from sve_jax.data.builders.ood_text import OodText
from sve_jax.data.builders.ood_text import OodTextConfig

FILE_FORMAT = 'array_record'

#: Every local builder by its tfds name (what `config.data.name` takes).
LOCAL_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    cls.name: cls for cls in (TweetSentiment, OodText, FortunesText, FashionMnistLocal,
                              DigitsOod, CsvText, ImageFolder)
}

__all__ = [
    # The registry and the file format.
    'FILE_FORMAT', 'LOCAL_BUILDERS',
    # csv_text and tweet_sentiment.
    'AGREEMENT_FEATURE', 'CsvText', 'CsvTextConfig', 'TWEET_LABELS', 'TweetSentiment',
    'tweet_corpus_path',
    # ood_text and fortunes_text.
    'FortunesText', 'FortunesTextConfig', 'OodText', 'OodTextConfig',
    # fashion_mnist_local and digits_ood.
    'DigitsOod', 'FASHION_MNIST_DIR', 'FASHION_MNIST_LABELS', 'FashionMnistConfig',
    'FashionMnistLocal', 'digits_to_uint8', 'read_fashion_mnist',
    # image_folder.
    'ImageFolder', 'ImageFolderConfig',
]
