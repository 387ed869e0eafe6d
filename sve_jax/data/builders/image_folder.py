"""`image_folder`: image classification from a folder with one subfolder per class."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from sve_jax.choices import check_choice
from sve_jax.data import fingerprint
from sve_jax.data import images
from sve_jax.data import labels
from sve_jax.data import options
from sve_jax.data import splits
from sve_jax.data.builders import user_files


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
    fingerprint: `fingerprint.fingerprint` of the image files, set by `make_config`.
  """
  folder: str | None = None
  split_folders: tuple[tuple[str, str], ...] = ()
  image_size: tuple[int, int] = (224, 224)
  channels: int = 3
  label_names: tuple[str, ...] | None = None
  split_fractions: tuple[tuple[str, float], ...] = splits.DEFAULT_SPLIT_FRACTIONS
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
    options.check_option_names(cls.name, options.builder_options(cls), values)
    values = options.tupled(values, ('split_folders', 'split_fractions', 'label_names',
                                     'image_size'))
    config = user_files.absolute_paths(ImageFolderConfig(name='custom', **values),
                                       'folder', 'split_folders')
    check_choice(config.channels, (1, 3), 'image_folder: channels')
    folders = user_files.single_or_per_split(config.folder, config.split_folders, 'folder')
    files = [os.path.join(folder, rel) for folder in folders.values()
             for rel, _ in images.list_image_folder(folder)]
    config = dataclasses.replace(config, fingerprint=fingerprint.fingerprint(files))
    return options.named_config(config)

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
            'label': user_files.label_feature(config.label_names),
            'file_name': tfds.features.Text(doc='class/file inside its folder'),
        }),
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict(config=json.loads(json.dumps(
            options.config_values(config), default=list))),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    folders = user_files.single_or_per_split(config.folder, config.split_folders, 'folder')
    listings = {key: images.list_image_folder(folder) for key, folder in folders.items()}
    names = config.label_names or tuple(sorted(
        {name for files in listings.values() for _, name in files}))
    labels.check_at_least_two_classes(names, ', '.join(folders.values()))
    user_files.set_label_names(self.info, names)
    plan = splits.plan_splits({key: len(files) for key, files in listings.items()},
                              config.split_fractions, config.split_seed)
    label_ids = {key: labels.encode_labels([name for _, name in files], names,
                                           source=folders[key])
                 for key, files in listings.items()}
    labels.check_train_has_every_class(
        {split: (folders[key], label_ids[key][rows], rows) for split, (key, rows) in plan.items()},
        names)
    return {split: self._generate_examples(folders[key], listings[key], label_ids[key], rows)
            for split, (key, rows) in plan.items()}

  def _generate_examples(self, folder, files, label_ids, rows):
    config = self.builder_config
    for row in rows:
      rel_path = files[row][0]
      yield rel_path, {
          'image': images.load_image(os.path.join(folder, rel_path),
                                     tuple(config.image_size), config.channels),
          'label': label_ids[row],
          'file_name': rel_path,
      }
