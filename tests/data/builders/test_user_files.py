"""What the builders of users' files share (`sve_jax.data.builders.user_files`)."""
import dataclasses
import os

import pytest
import tensorflow_datasets as tfds

from sve_jax.data.builders import user_files


def test_single_or_per_split_takes_exactly_one():
  assert user_files.single_or_per_split('a.csv', (), 'file') == {None: 'a.csv'}
  assert user_files.single_or_per_split(None, (('train', 'b.csv'),), 'file') == {
      'train': 'b.csv'}
  for one, per_split in (('a.csv', (('train', 'b.csv'),)), (None, ())):
    with pytest.raises(ValueError, match=r'give exactly one of `file` .* or `split_files`'):
      user_files.single_or_per_split(one, per_split, 'file')


def test_absolute_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
  @dataclasses.dataclass
  class Config:
    file: str | None
    split_files: tuple

  monkeypatch.chdir(tmp_path)
  config = user_files.absolute_paths(Config('a.csv', (('test', 'sub/b.csv'),)),
                                     'file', 'split_files')
  assert config == Config(os.path.join(tmp_path, 'a.csv'),
                          (('test', os.path.join(tmp_path, 'sub', 'b.csv')),))
  assert user_files.absolute_paths(Config(None, ()), 'file', 'split_files') == Config(None, ())


def test_label_feature_named_now_or_later():
  assert user_files.label_feature(['a', 'b']).names == ['a', 'b']
  later = tfds.features.FeaturesDict({'label': user_files.label_feature(None)})

  class Info:
    features = later

  user_files.set_label_names(Info, ('x', 'y', 'z'))
  assert later['label'].names == ['x', 'y', 'z'] and later['label'].num_classes == 3
