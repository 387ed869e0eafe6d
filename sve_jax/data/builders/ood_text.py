"""Unlabelled out-of-distribution text sets, each one `test` split of `text` and `id`:

* `ood_text`: far OOD, sentences from Python standard-library docstrings;
* `fortunes_text`: near OOD, short informal quips from Debian's `fortunes-min` cookie file.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import tensorflow_datasets as tfds

from sve_jax.data import fortunes
from sve_jax.data import options
from sve_jax.data import stdlib_text


class _UnlabelledText:
  """What the unlabelled text builders share (mixed in before `GeneratorBasedBuilder`): a
  `test` split of texts, each with its position (`id`).

  Subclasses give `OPTIONS_CLASS` (their one config, `default`, is its defaults; it says
  what the set is, `describe()`, and reads it, `texts()`), `TUPLE_OPTIONS` (options given
  as lists, which the metadata records) and `ID_DOC`.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  OPTIONS_CLASS: type[tfds.core.BuilderConfig]
  TUPLE_OPTIONS: tuple[str, ...] = ()
  ID_DOC = ''

  def __init_subclass__(cls, **kwargs):
    cls.BUILDER_CONFIGS = [cls.OPTIONS_CLASS(name='default')]  # before tfds registers it
    super().__init_subclass__(**kwargs)

  @classmethod
  def make_config(cls, **values) -> tfds.core.BuilderConfig:
    return options.default_with(cls, values, cls.TUPLE_OPTIONS)

  def _metadata(self) -> dict:
    """The list-valued options, the ones a description cannot hold in full."""
    return {name: list(getattr(self.builder_config, name)) for name in self.TUPLE_OPTIONS}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.describe(),
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'id': tfds.features.Scalar(np.int64, doc=self.ID_DOC),
        }),
        metadata=tfds.core.MetadataDict(**self._metadata()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'test': self._generate_examples(self.builder_config.texts())}

  def _generate_examples(self, texts):
    for i, text in enumerate(texts):
      yield i, {'text': text, 'id': i}


@dataclasses.dataclass(eq=False)
class OodTextConfig(tfds.core.BuilderConfig):
  """Options of `ood_text`; see `stdlib_text.docstring_sentences`."""
  modules: tuple[str, ...] = stdlib_text.OOD_TEXT_MODULES
  min_words: int = 6
  max_words: int = 40
  max_sentences: int = 2000

  def describe(self) -> str:
    return ('Prose sentences from the docstrings of Python '
            f'{sys.version_info.major}.{sys.version_info.minor} '
            f'standard-library modules {", ".join(self.modules)}; '
            f'{self.min_words}-{self.max_words} words, deduplicated, '
            f'at most {self.max_sentences}. Split `test` only; no labels.')

  def texts(self) -> list[str]:
    return stdlib_text.docstring_sentences(self.modules, min_words=self.min_words,
                                           max_words=self.max_words,
                                           max_sentences=self.max_sentences)


@dataclasses.dataclass(eq=False)
class FortunesTextConfig(tfds.core.BuilderConfig):
  """Options of `fortunes_text`; see `fortunes.fortune_texts`.

  Attributes:
    fortunes_dir: folder of the cookie files (Debian's `fortunes-min` by default).
    files: the cookie files to read, in order.
    min_words, max_words: the entries kept, by their number of words.
  """
  fortunes_dir: str = fortunes.FORTUNES_DIR
  files: tuple[str, ...] = fortunes.FORTUNE_FILES
  min_words: int = 3
  max_words: int = 40

  def describe(self) -> str:
    return (f'Entries of the fortune cookie files {", ".join(self.files)} under '
            f'{self.fortunes_dir}, whitespace collapsed; {self.min_words}-'
            f'{self.max_words} words, deduplicated. Split `test` only; no labels.')

  def texts(self) -> list[str]:
    return fortunes.fortune_texts(self.fortunes_dir, self.files, min_words=self.min_words,
                                  max_words=self.max_words)


class OodText(_UnlabelledText, tfds.core.GeneratorBasedBuilder):
  """Out-of-distribution text: sentences from Python standard-library docstrings."""

  OPTIONS_CLASS = OodTextConfig
  TUPLE_OPTIONS = ('modules',)
  ID_DOC = 'position in walk order'


class FortunesText(_UnlabelledText, tfds.core.GeneratorBasedBuilder):
  """Near-OOD text: short informal quips from Debian's `fortunes-min` cookie file."""

  OPTIONS_CLASS = FortunesTextConfig
  TUPLE_OPTIONS = ('files',)
  ID_DOC = 'position in file order'
