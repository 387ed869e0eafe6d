"""Class labels (`sve_jax.data.labels`): the vocabulary's order, indices, and classes that
have no training example, stopped while the data are prepared."""
import json

import numpy as np
import pytest

from sve_jax import data
from sve_jax.data import labels
from sve_jax.data import splits


def test_integer_labels_sort_numerically_and_others_as_text():
  rng = np.random.default_rng(0)
  values = [str(v) for v in rng.integers(-50, 500, 200)]
  assert labels.label_vocabulary(values) == tuple(
      str(v) for v in sorted({int(v) for v in values}))
  assert labels.label_vocabulary(['10', '2', '+3']) == ('2', '+3', '10')
  assert labels.label_vocabulary(['b', '10', 'a', '2']) == ('10', '2', 'a', 'b')


def test_encode_labels_indexes_the_names():
  rng = np.random.default_rng(1)
  names = ('neg', 'neu', 'pos')
  values = [names[i] for i in rng.integers(0, 3, 50)]
  encoded = labels.encode_labels(values, names, source='f.csv')
  assert encoded.dtype == np.int64
  assert [names[i] for i in encoded] == values
  with pytest.raises(ValueError, match=r"f\.csv: label\(s\) \['meh'\] are not in the label "
                                       r"names \['neg', 'neu', 'pos'\]"):
    labels.encode_labels(['neg', 'meh'], names, source='f.csv')


def test_check_train_has_every_class_names_where_the_examples_are():
  train = ('train.csv', np.array([0, 0, 1]), np.arange(3))
  test = ('test.csv', np.array([2, 0, 2]), np.array([4, 5, 6]))
  labels.check_train_has_every_class({'train': train}, ['a', 'b'])
  labels.check_train_has_every_class({'test': test}, ['a', 'b', 'c'])  # no train: no check
  with pytest.raises(ValueError, match=r"'c' only in test \(test\.csv, rows \[4, 6\]\), "
                                       r"'d' has no example at all"):
    labels.check_train_has_every_class({'train': train, 'test': test}, ['a', 'b', 'c', 'd'])


# ---------------------------------------------------------------- through the builder


def write_jsonl(path, values):
  with open(path, 'w') as f:
    for i, label in enumerate(values):
      f.write(json.dumps({'text': f'example {i}', 'label': label}) + '\n')
  return str(path)


def test_a_label_only_in_the_test_file(tmp_path):
  files = {'train': write_jsonl(tmp_path / 'train.jsonl', ['a', 'b'] * 4),
           'test': write_jsonl(tmp_path / 'test.jsonl', ['a', 'b', 'c', 'a'])}
  with pytest.raises(ValueError, match=r"without a training example after the split: 'c' "
                                       r"only in test \(.*test\.jsonl, rows \[2\]\)"):
    data.get_dataset({'name': 'csv_text', 'split_files': files}, str(tmp_path / 'tfds'))


def test_a_class_with_no_training_example_after_the_split(tmp_path):
  # One 'rare' example among 20: the seeded 50/50 split puts it in test or in train.
  values = ['a', 'b'] * 10
  values[7] = 'rare'
  path = write_jsonl(tmp_path / 'all.jsonl', values)
  fractions = {'train': 0.5, 'test': 0.5}
  seed = next(s for s in range(50)
              if 7 not in splits.split_indices(20, fractions, s)['train'])
  with pytest.raises(ValueError, match=r"'rare' only in test \(.*all\.jsonl, rows \[7\]\)"):
    data.get_dataset({'name': 'csv_text', 'file': path, 'split_fractions': fractions,
                      'split_seed': seed}, str(tmp_path / 'tfds'))


def test_a_declared_label_with_no_example_at_all(tmp_path):
  path = write_jsonl(tmp_path / 'all.jsonl', ['a', 'b'] * 5)
  with pytest.raises(ValueError, match=r"'c' has no example at all"):
    data.get_dataset({'name': 'csv_text', 'file': path, 'label_names': ['a', 'b', 'c']},
                     str(tmp_path / 'tfds'))


def test_labels_of_a_single_class_are_refused_before_training(tmp_path):
  path = write_jsonl(tmp_path / 'one.jsonl', ['positive'] * 12)
  with pytest.raises(ValueError, match=r"one\.jsonl, column 'label': the labels hold 1 "
                                       r"class\(es\) \['positive'\]; a classifier needs"):
    data.get_dataset({'name': 'csv_text', 'file': path}, str(tmp_path / 'tfds'))
