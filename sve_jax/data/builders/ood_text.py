"""`ood_text`: out-of-distribution text, sentences from Python standard-library docstrings."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import tensorflow_datasets as tfds

from sve_jax.data import options
from sve_jax.data import stdlib_text


@dataclasses.dataclass(eq=False)
class OodTextConfig(tfds.core.BuilderConfig):
  """Options of `ood_text`; see `stdlib_text.docstring_sentences`."""
  modules: tuple[str, ...] = stdlib_text.OOD_TEXT_MODULES
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
    return options.default_with(cls, values, ('modules',))

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
    sentences = stdlib_text.docstring_sentences(
        config.modules, min_words=config.min_words, max_words=config.max_words,
        max_sentences=config.max_sentences)
    return {'test': self._generate_examples(sentences)}

  def _generate_examples(self, sentences):
    for i, sentence in enumerate(sentences):
      yield i, {'text': sentence, 'id': i}
