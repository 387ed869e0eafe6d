"""From a data config to random-access splits: `get_dataset`.

Two kinds of names are accepted:

* local builders (`builders.LOCAL_BUILDERS`: `tweet_sentiment`, `ood_text`,
  `fortunes_text`, `fashion_mnist_local`, `digits_ood`, `csv_text`, `image_folder`), prepared
  into `data_dir` on first use and reused afterwards;
* tfds catalog names (`cifar100`, `glue/sst2`, ...), read from array_record
  data already prepared in `data_dir` (preparing them needs a download, and
  their `Image` features need TensorFlow to encode), or, with `mock_examples`,
  from `tfds.testing.mock_data` stand-ins with the real features.

A data set with ARC's multiple-choice features (`ai2_arc/ARC-Easy`: `question`,
`choices` {`text`, `label`}, a `ClassLabel` `answerKey`) is classification over its answer
letters: its splits are read through `multiple_choice.ChoiceSource`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import filelock
import tensorflow_datasets as tfds

from sve_jax.data import builders
from sve_jax.data import multiple_choice
from sve_jax.data import pipeline
from sve_jax.data.options import builder_options
from sve_jax.data.options import check_option_names

# Options every data config may hold; the rest are builder options.
COMMON_OPTIONS = frozenset({
    'name', 'splits', 'input_key', 'label_key', 'max_train_examples',
    'subsample_seed', 'download', 'mock_examples'})
# tfds registers catalog builders by importing these packages in one loop that
# stops at the first ImportError (`nearest_neighbors` needs h5py), which leaves
# later ones such as `text` (glue) unregistered; `_register_catalog` imports
# them one by one.
_TFDS_BUILDER_PACKAGES = (
    'audio', 'graphs', 'image', 'image_classification', 'object_detection',
    'nearest_neighbors', 'question_answering', 'd4rl', 'ranking',
    'recommendation', 'rl_unplugged', 'rlds.datasets', 'robotics', 'robomimic',
    'structured', 'summarization', 'text', 'text_simplification', 'time_series',
    'translate', 'video', 'vision_language')
_INPUT_KEYS = ('image', 'text', 'sentence')


@dataclasses.dataclass(frozen=True)
class Dataset:
  """The random-access splits of one data set and what a model needs of it.

  Attributes:
    name: the configured name.
    splits: `{role: source}`, e.g. train / validation / test; each source has
      `len()` and `[i] -> {feature: value}` (see `pipeline`).
    info: the tfds `DatasetInfo` (features, descriptions, split sizes).
    input_key: the feature the model reads (`image`, `text`, `sentence`, ...).
    label_key: the class label feature, or None (e.g. `ood_text`).
    label_names: class names in label order, or None.
  """
  name: str
  splits: Mapping[str, pipeline.Source]
  info: tfds.core.DatasetInfo
  input_key: str
  label_key: str | None
  label_names: tuple[str, ...] | None

  @property
  def num_classes(self) -> int | None:
    return None if self.label_names is None else len(self.label_names)


def get_dataset(config: Mapping[str, Any], data_dir: str) -> Dataset:
  """Builds (or reuses) the configured data set and opens its splits.

  Args:
    config: a mapping or `ml_collections.ConfigDict` with
      `name`: a local builder or tfds catalog name;
      `splits` (optional): `{role: tfds split spec}`, e.g.
        `{'train': 'train[:90%]', 'validation': 'train[90%:]', 'test': 'test'}`;
        by default every split the data set has, under its own name;
      `input_key` / `label_key` (optional): override the supervised keys;
      `max_train_examples` (optional): keep a random subset of the `train`
        role, drawn with `subsample_seed` (default 0);
      `download` (catalog only, default False): let tfds download and prepare;
      `mock_examples` (catalog only): use that many random stand-in examples
        per split (`tfds.testing.mock_data`), no files needed;
      anything else: options of the local builder's `make_config`
        (`option_types`), e.g. `file`, `text_column`, `label_column`,
        `split_fractions`, `split_seed` for `csv_text`; `folder`, `image_size`
        for `image_folder`. `None` leaves an option at the builder's default.
    data_dir: where tfds data sets are prepared and looked up.

  Returns:
    The `Dataset`.

  Raises:
    ValueError: on unknown options or split names, naming them; for
      multiple-choice data, on the first bad example (`multiple_choice.encode_example`).
    FileNotFoundError: a catalog data set neither prepared in `data_dir`,
      nor downloaded, nor mocked.
  """
  options = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  if 'name' not in options:
    raise ValueError(f'data config needs a `name`; got keys {sorted(options)}.')
  name = options['name']
  builder, open_split = _open_builder(name, options, data_dir)
  split_specs = dict(options.get('splits') or {s: s for s in builder.info.splits})
  if not options.get('mock_examples'):
    _check_splits(name, split_specs, builder.info)
  sources = {role: open_split(split=spec) for role, spec in split_specs.items()}
  choice_names = _multiple_choice_names(builder.info.features)
  if choice_names:
    sources = _choice_sources(name, sources, split_specs, choice_names)
  if options.get('max_train_examples') is not None:
    if 'train' not in sources:
      raise ValueError(f'{name}: max_train_examples needs a `train` split; '
                       f'splits are {sorted(sources)}.')
    sources['train'] = pipeline.subsample(
        sources['train'], options['max_train_examples'],
        options.get('subsample_seed', 0))
  if choice_names:
    input_key, label_key = multiple_choice.TEXT, multiple_choice.LABEL
    label_names = choice_names
  else:
    input_key, label_key = _model_keys(builder.info, options.get('input_key'),
                                       options.get('label_key'))
    label = builder.info.features[label_key] if label_key else None
    label_names = (tuple(label.names)
                   if isinstance(label, tfds.features.ClassLabel) else None)
  return Dataset(name=name, splits=sources, info=builder.info,
                 input_key=input_key, label_key=label_key, label_names=label_names)


def _multiple_choice_names(features: tfds.features.FeaturesDict) -> tuple[str, ...] | None:
  """The answer letters of data with ARC's multiple-choice features (the `ClassLabel` names of
  its answer, e.g. A-E), or None for any other data."""
  mc = multiple_choice
  answer, choices = (features[k] if k in features else None for k in (mc.ANSWER, mc.CHOICES))
  inner = getattr(choices, 'feature', None)  # a Sequence of {text, label}
  if (mc.QUESTION not in features or not isinstance(answer, tfds.features.ClassLabel)
      or not isinstance(inner, tfds.features.FeaturesDict)
      or not {mc.CHOICE_TEXT, mc.CHOICE_LABEL} <= set(inner.keys())):
    return None
  return tuple(answer.names)


def _choice_sources(name: str, sources: Mapping[str, pipeline.Source],
                    split_specs: Mapping[str, str], letters: tuple[str, ...]
                    ) -> dict[str, pipeline.Source]:
  """Each split as a `multiple_choice.ChoiceSource` over the class set `letters`, every
  example checked once (a bad one stops the run here, before any model loads)."""
  out = {}
  for role, source in sources.items():
    out[role] = multiple_choice.ChoiceSource(source, len(letters), letters)
    multiple_choice.check_source(out[role], f'{name} split {split_specs[role]!r}')
  return out


def _open_builder(name: str, options: Mapping[str, Any], data_dir: str):
  """The builder of data set `name` and a function `split=spec -> source` opening its splits.

  Raises:
    ValueError: catalog-only options for a local builder, or builder options for a catalog
      data set.
  """
  local_options = {k: v for k, v in options.items()
                   if k not in COMMON_OPTIONS and v is not None}
  if name in builders.LOCAL_BUILDERS:
    for key in ('download', 'mock_examples'):
      if options.get(key):
        raise ValueError(f'data option {key!r} applies to tfds catalog data '
                         f'sets only, not to the local builder {name!r}.')
    builder = _prepared_local_builder(name, local_options, data_dir)
    return builder, builder.as_data_source
  if local_options:
    raise ValueError(f'unknown data option(s) {sorted(local_options)} for '
                     f'catalog data set {name!r}; known: {sorted(COMMON_OPTIONS)}.')
  return _catalog_builder(name, data_dir, download=bool(options.get('download')),
                          mock_examples=options.get('mock_examples'),
                          has_splits=bool(options.get('splits')))


def _prepared_local_builder(name: str, options: dict[str, Any], data_dir: str):
  """A local builder with its config, prepared into `data_dir` if not yet."""
  builder_cls = builders.LOCAL_BUILDERS[name]
  check_option_names(name, option_types(name), options)
  config = builder_cls.make_config(**options) if hasattr(builder_cls, 'make_config') else None
  if any(config is predefined for predefined in builder_cls.BUILDER_CONFIGS):
    # By name: tfds accepts a predefined config object only as that very instance, which a
    # builder unpickled in a grain worker process would not hold.
    config = config.name
  # Built under the lock too: a builder reads what is prepared when it is made, so one made
  # while another run prepares would see no splits.
  with preparation_lock(data_dir, name):
    builder = builder_cls(data_dir=data_dir, config=config,
                          file_format=builders.FILE_FORMAT)
    builder.download_and_prepare()
  return builder


def preparation_lock(data_dir: str, name: str) -> contextlib.AbstractContextManager:
  """An inter-process lock on preparing data set ``name`` in ``data_dir``.

  Two runs preparing the same local data set into one folder at once (a sweep's runs side by
  side, or the processes of one multi-process run) would write the same tfds files and crash;
  under the lock the second waits and then finds the data prepared. A remote ``data_dir``
  (``gs://``, ...) gets no lock file: there is no local file system to hold it.
  """
  if '://' in data_dir:
    return contextlib.nullcontext()
  os.makedirs(data_dir, exist_ok=True)
  return filelock.FileLock(os.path.join(data_dir, f".{name.replace('/', '_')}.lock"))


def _catalog_builder(name: str, data_dir: str, *, download: bool,
                     mock_examples: int | None, has_splits: bool):
  """A tfds catalog builder and a function opening one of its splits."""
  _register_catalog()
  if mock_examples:
    if not has_splits:
      # Mocked builders know no split names (they have no prepared files).
      raise ValueError(f'{name}: mock_examples needs explicit `splits`, e.g. '
                       "{'train': 'train', 'test': 'test'}.")
    mock = functools.partial(tfds.testing.mock_data, num_examples=mock_examples,
                             policy=tfds.testing.MockPolicy.USE_CODE)
    with mock():
      builder = tfds.builder(name, data_dir=data_dir)

    def open_mock_split(split):
      with mock():
        return _ItemwiseSource(builder.as_data_source(split=split))
    return builder, open_mock_split

  builder = tfds.builder(name, data_dir=data_dir)
  if download:
    needs_tf = [key for key, feature in builder.info.features.items()
                if _encodes_with_tensorflow(feature)]
    if needs_tf and not _tensorflow_installed():
      raise RuntimeError(_tensorflow_missing(name, builder, data_dir, f'its {needs_tf} features'))
    try:
      builder.download_and_prepare(file_format=builders.FILE_FORMAT)
    except ModuleNotFoundError as e:
      if e.name != 'tensorflow':
        raise
      raise RuntimeError(_tensorflow_missing(name, builder, data_dir, 'its builder')) from e
  elif not builder.is_prepared():
    raise FileNotFoundError(
        f'{name} is not prepared in {data_dir} ({builder.data_path} is missing). '
        'Prepare it as array_record where it can be downloaded, set '
        '`download=True`, or use `mock_examples` for stand-in data.')
  return builder, builder.as_data_source


def _encodes_with_tensorflow(feature) -> bool:
  """Whether tfds needs TF to encode `feature` (`Image`, also nested) when preparing."""
  if isinstance(feature, tfds.features.Image):
    return True
  if isinstance(feature, tfds.features.FeaturesDict):
    return any(_encodes_with_tensorflow(f) for f in feature.values())
  inner = getattr(feature, 'feature', None)  # Sequence, Dataset, Video.
  return inner is not None and _encodes_with_tensorflow(inner)


def _tensorflow_installed() -> bool:
  return importlib.util.find_spec('tensorflow') is not None  # Without importing it (slow).


def _tensorflow_missing(name: str, builder, data_dir: str, what: str) -> str:
  return (f'preparing {name} needs TensorFlow ({what} encode with TF; reading them back '
          'does not), which this install lacks, so nothing was downloaded. Install the '
          "project's `tf` extra (pip install -e '.[tf]' in the checkout, or "
          "pip install 'sve_jax[tf]'), or prepare it as array_record where TF is installed "
          f'and copy {builder.data_path} into {data_dir}.')


def option_types(name: str) -> dict[str, type]:
  """`{option: type}` the data set `name` accepts: a local builder's, none for catalog data."""
  builder_cls = builders.LOCAL_BUILDERS.get(name)
  return builder_options(builder_cls) if builder_cls else {}


def all_option_types() -> dict[str, type]:
  """`{option: type}` over every local builder: what a config's `options` can hold.

  Raises:
    TypeError: two builders declare one option with different types.
  """
  union = {}
  for name in builders.LOCAL_BUILDERS:
    for option, kind in option_types(name).items():
      if union.setdefault(option, kind) is not kind:
        raise TypeError(f'option {option!r} is {union[option].__name__} in one builder and '
                        f'{kind.__name__} in {name}; give them one type.')
  return union


def check_options(name: str, options: Mapping[str, Any], key: str = 'options') -> None:
  """Raises ValueError, before any data is read, on an option `name` does not accept.

  Args:
    name: a local builder or tfds catalog name.
    options: `{option: value}`; `None` values are unset and always pass.
    key: how the caller names `options` in the message, e.g. `config.data.options`.
  """
  given = [k for k, v in options.items() if v is not None]
  check_option_names(name, option_types(name), given, key)


def is_known_dataset(name: str) -> bool:
  """Whether `name` is a local builder or a tfds catalog name (`glue/sst2:2.0.0`)."""
  if name in builders.LOCAL_BUILDERS:
    return True
  _register_catalog()
  base = name.split(':')[0].split('/')[0]
  return base in tfds.list_builders(with_community_datasets=False)


@functools.cache
def _register_catalog() -> None:
  """Registers every tfds catalog builder that imports without TF."""
  for package in _TFDS_BUILDER_PACKAGES:
    try:
      importlib.import_module(f'tensorflow_datasets.{package}')
    except ImportError:
      pass  # Builders needing absent packages (h5py, ...) stay unavailable.


class _ItemwiseSource(pipeline.Subset):
  """Reads a mocked tfds source item by item.

  `tfds.testing.mock_data` attaches `__getitems__` to a MagicMock as a plain
  attribute, so it is called without `self` and fails; `__getitem__` works.
  """

  def __init__(self, source):
    super().__init__(source, range(len(source)))

  def __getitems__(self, keys):
    return [self.source[int(self.indices[k])] for k in keys]


def _check_splits(name: str, split_specs: Mapping[str, str],
                  info: tfds.core.DatasetInfo) -> None:
  """Raises if a split spec names a split the data set does not have."""
  for role, spec in split_specs.items():
    base = str(spec).split('[', 1)[0]
    if base not in info.splits:
      raise ValueError(f'{name}: split {spec!r} (for {role!r}) does not exist; '
                       f'available splits: {sorted(info.splits)}.')


def _model_keys(info: tfds.core.DatasetInfo, input_key: str | None,
                label_key: str | None) -> tuple[str, str | None]:
  """Input and label feature names: given, else supervised keys, else guessed."""
  features = info.features
  if info.supervised_keys and len(info.supervised_keys) == 2:
    default_input, default_label = info.supervised_keys
  else:
    default_input = next((k for k in _INPUT_KEYS if k in features), None)
    default_label = 'label' if 'label' in features else None
  input_key = input_key or default_input
  label_key = label_key or default_label
  for role, key in (('input_key', input_key), ('label_key', label_key)):
    if key is not None and key not in features:
      raise ValueError(f'{info.name}: {role} {key!r} is not a feature; features '
                       f'are {sorted(features)}.')
  if input_key is None:
    raise ValueError(f'{info.name}: set `input_key`; features are {sorted(features)}.')
  return input_key, label_key
