"""`fortunes_text`: near-OOD text, short informal English from the `fortune` cookie files."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from sve_jax.data import fortunes
from sve_jax.data import options


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


class FortunesText(tfds.core.GeneratorBasedBuilder):
  """Near-OOD text: short informal quips from Debian's `fortunes-min` cookie file."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [FortunesTextConfig(name='default')]
  OPTIONS_CLASS = FortunesTextConfig

  @classmethod
  def make_config(cls, **values) -> FortunesTextConfig:
    return options.default_with(cls, values, ('files',))

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            f'Entries of the fortune cookie files {", ".join(config.files)} under '
            f'{config.fortunes_dir}, whitespace collapsed; {config.min_words}-'
            f'{config.max_words} words, deduplicated. Split `test` only; no labels.'),
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'id': tfds.features.Scalar(np.int64, doc='position in file order'),
        }),
        metadata=tfds.core.MetadataDict(files=list(config.files)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    texts = fortunes.fortune_texts(config.fortunes_dir, config.files,
                                   min_words=config.min_words, max_words=config.max_words)
    return {'test': self._generate_examples(texts)}

  def _generate_examples(self, texts):
    for i, text in enumerate(texts):
      yield i, {'text': text, 'id': i}
