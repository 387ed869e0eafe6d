"""The `image_folder` builder: class subfolders decoded, resized and labelled."""
import os

import numpy as np
import pytest
from PIL import Image

from sve_jax import data
from sve_jax.data import builders

from conftest import all_examples


def test_image_folder_decodes_resizes_and_labels(tmp_path):
  colours = {'cat': (255, 0, 0), 'dog': (0, 0, 255), 'emu': (0, 200, 30)}
  sizes = [(10, 12), (20, 7), (5, 5), (33, 16)]
  for name, colour in colours.items():
    os.makedirs(tmp_path / 'photos' / name)
    for i, (w, h) in enumerate(sizes):
      Image.new('RGB', (w, h), colour).save(tmp_path / 'photos' / name / f'{i}.png')
  (tmp_path / 'photos' / 'cat' / 'notes.txt').write_text('not an image')
  dataset = data.get_dataset(
      {'name': 'image_folder', 'folder': str(tmp_path / 'photos'),
       'image_size': (8, 6), 'split_fractions': {'train': 0.5, 'test': 0.5}},
      str(tmp_path / 'tfds'))
  assert dataset.label_names == ('cat', 'dog', 'emu')
  examples = [ex for s in dataset.splits.values() for ex in all_examples(s)]
  assert len(examples) == 12
  assert {len(s) for s in dataset.splits.values()} == {6}
  for ex in examples:
    name = dataset.label_names[ex['label']]
    assert ex['file_name'].decode().startswith(name + '/')
    assert ex['image'].shape == (8, 6, 3) and ex['image'].dtype == np.uint8
    assert (ex['image'] == colours[name]).all()  # A solid colour survives resizing.


def test_split_folders_are_used_whole_in_grey(tmp_path):
  for split, count in (('train', 3), ('test', 2)):
    for name, level in (('dark', 20), ('light', 230)):
      os.makedirs(tmp_path / split / name)
      for i in range(count):
        Image.new('L', (5, 5), level).save(tmp_path / split / name / f'{i}.png')
  dataset = data.get_dataset(
      {'name': 'image_folder', 'split_folders': {'train': str(tmp_path / 'train'),
                                                  'test': str(tmp_path / 'test')},
       'image_size': (3, 3), 'channels': 1}, str(tmp_path / 'tfds'))
  assert {r: len(s) for r, s in dataset.splits.items()} == {'train': 6, 'test': 4}
  for ex in all_examples(dataset.splits['test']):
    assert ex['image'].shape == (3, 3, 1)
    assert (ex['image'] == (20, 230)[ex['label']]).all()


def test_channels_other_than_1_or_3_are_refused(tmp_path):
  with pytest.raises(ValueError, match=r"image_folder: channels=2 must be one of \(1, 3\)"):
    builders.ImageFolder.make_config(folder=str(tmp_path), channels=2)
