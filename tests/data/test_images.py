"""Image files (`sve_jax.data.images`): class folders listed, images decoded to RGB, and
hostile folders stopped with the path named (or skipped files counted).

Decoding errors surface while an `image_folder` data set is prepared, so those cases go
through `data.get_dataset`.
"""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from sve_jax import data
from sve_jax.data import images


def image_folder(tmp_path, per_class=4):
  root = tmp_path / 'photos'
  for name, colour in (('cat', (200, 10, 10)), ('dog', (10, 10, 200))):
    os.makedirs(root / name)
    for i in range(per_class):
      Image.new('RGB', (6, 5), colour).save(root / name / f'{i}.png')
  return root


def prepare_images(root, tmp_path):
  return data.get_dataset({'name': 'image_folder', 'folder': str(root), 'image_size': (4, 4),
                           'split_fractions': {'train': 0.5, 'test': 0.5}},
                          str(tmp_path / 'tfds'))


def test_list_image_folder_sorts_classes_and_files(tmp_path):
  root = image_folder(tmp_path, per_class=3)
  (root / '.hidden').mkdir()
  (root / 'cat' / '.DS_Store').write_bytes(b'')
  assert images.list_image_folder(root) == [
      (f'{name}/{i}.png', name) for name in ('cat', 'dog') for i in range(3)]


def test_load_image_resizes_as_pil_does(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(tmp_path / 'x.png')
  expected = np.asarray(Image.fromarray(pixels).resize((5, 7), Image.BILINEAR))
  np.testing.assert_array_equal(images.load_image(tmp_path / 'x.png', (7, 5)), expected)
  grey = images.load_image(tmp_path / 'x.png', (7, 5), channels=1)
  assert grey.shape == (7, 5, 1) and grey.dtype == np.uint8


def test_a_corrupt_image_names_its_path(tmp_path):
  root = image_folder(tmp_path)
  (root / 'dog' / '2.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 50)  # truncated
  with pytest.raises(ValueError, match=r'photos/dog/2\.png: cannot decode the image'):
    prepare_images(root, tmp_path)


def test_non_image_files_are_skipped_and_counted(tmp_path, caplog):
  root = image_folder(tmp_path)
  (root / 'cat' / 'notes.txt').write_text('not an image')
  (root / 'dog' / 'labels.csv').write_text('a,b')
  with caplog.at_level(logging.WARNING):
    files = images.list_image_folder(root)
  assert len(files) == 8 and all(not f.endswith(('.txt', '.csv')) for f, _ in files)
  assert "skipped 2 file(s) without an image suffix" in caplog.text
  assert 'cat/notes.txt' in caplog.text and 'dog/labels.csv' in caplog.text


def test_grayscale_and_rgba_pngs_become_rgb(tmp_path):
  root = image_folder(tmp_path)
  Image.new('L', (6, 5), 77).save(root / 'cat' / 'grey.png')
  Image.new('RGBA', (6, 5), (10, 20, 30, 0)).save(root / 'dog' / 'clear.png')
  Image.new('LA', (6, 5), (90, 128)).save(root / 'dog' / 'grey_alpha.png')
  dataset = prepare_images(root, tmp_path)
  decoded = {ex['file_name'].decode(): ex['image']
             for source in dataset.splits.values() for ex in source}
  assert len(decoded) == 11
  expected = {'cat/grey.png': (77, 77, 77), 'dog/clear.png': (10, 20, 30),
              'dog/grey_alpha.png': (90, 90, 90)}
  for name, rgb in expected.items():
    assert decoded[name].shape == (4, 4, 3)
    np.testing.assert_array_equal(decoded[name], np.broadcast_to(rgb, (4, 4, 3)))


def test_an_empty_class_folder_is_refused_by_path(tmp_path):
  root = image_folder(tmp_path)
  os.makedirs(root / 'emu')
  (root / 'emu' / 'readme.txt').write_text('no pictures yet')
  with pytest.raises(ValueError, match=r'photos/emu: class folder without image files'):
    prepare_images(root, tmp_path)
