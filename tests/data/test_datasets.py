"""From a data config to random-access splits (`sve_jax.data.datasets`): local builders,
tfds catalog data (mocked, missing, or needing TensorFlow to prepare), and the options."""
import importlib.util
import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sve_jax import data
from sve_jax.data import builders
from sve_jax.data import datasets
from sve_jax.data import transforms

from conftest import write_csv


class Downloaded(Exception):
  """Raised instead of downloading."""


@pytest.fixture
def without_tensorflow_or_network(monkeypatch):
  if importlib.util.find_spec('tensorflow') is not None:
    # CI has no TF, and runs the real check; where TF is installed, act as if it were not.
    monkeypatch.setattr(datasets, '_tensorflow_installed', lambda: False)

  def download_and_prepare(*args, **kwargs):
    raise Downloaded

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', download_and_prepare)


def test_image_data_names_the_tf_extra_before_any_download(without_tensorflow_or_network,
                                                           tmp_path):
  with pytest.raises(RuntimeError, match=r"preparing cifar100 needs TensorFlow \(its "
                                         r"\['image'\] features.*nothing was downloaded.*"
                                         r"pip install -e '\.\[tf\]'"):
    data.get_dataset({'name': 'cifar100', 'download': True}, str(tmp_path))


def test_text_data_goes_on_to_download(without_tensorflow_or_network, tmp_path):
  with pytest.raises(Downloaded):  # GLUE's features are text: no TF needed to prepare.
    data.get_dataset({'name': 'glue/sst2', 'download': True}, str(tmp_path))


def test_tensorflow_is_not_installed():
  # Everything in tests/data must work without it.
  assert importlib.util.find_spec('tensorflow') is None


def test_mock_cifar100_builds_a_training_batch(tmp_path):
  dataset = data.get_dataset(
      {'name': 'cifar100', 'mock_examples': 24,
       'splits': {'train': 'train[:90%]', 'validation': 'train[90%:]', 'test': 'test'}},
      str(tmp_path))
  assert (dataset.input_key, dataset.label_key, dataset.num_classes) == ('image', 'label', 100)
  example = dataset.splits['train'][3]
  assert example['image'].shape == (32, 32, 3) and example['image'].dtype == np.uint8
  transform = transforms.image_transform(size=(32, 32), augment=True)
  batches = data.iterate(data.train_dataset(
      dataset.splits['train'], global_batch_size=8, seed=0, transform=transform))
  batch = next(batches)
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32 and ((0 <= batch['label']) & (batch['label'] < 100)).all()
  assert batches.get_state() == {'next_index': 1}


def test_mock_sst2_builds_a_tokenized_batch(tmp_path):
  dataset = data.get_dataset(
      {'name': 'glue/sst2', 'mock_examples': 20,
       'splits': {'train': 'train', 'validation': 'validation'}}, str(tmp_path))
  assert (dataset.input_key, dataset.num_classes) == ('sentence', 2)

  def tokenize(texts):
    assert all(isinstance(t, str) for t in texts)
    return {'input_ids': np.array([[len(t)] * 16 for t in texts], np.int32)}

  transform = transforms.text_transform(tokenize, text_key=dataset.input_key)
  batches = list(data.eval_batches(dataset.splits['validation'], global_batch_size=8,
                                   transform=transform))
  assert [b['input_ids'].shape for b in batches] == [(8, 16)] * 3
  assert [int(b['mask'].sum()) for b in batches] == [8, 8, 4]


def test_known_dataset_names():
  for name in ('tweet_sentiment', 'image_folder', 'cifar100', 'glue/sst2',
               'oxford_flowers102', 'dtd', 'oxford_iiit_pet:4.0.0'):
    assert data.is_known_dataset(name), name
  assert not data.is_known_dataset('no_such_data_set')


def test_catalog_without_prepared_data_explains(tmp_path):
  with pytest.raises(FileNotFoundError, match='cifar10 is not prepared.*mock_examples'):
    data.get_dataset({'name': 'cifar10'}, str(tmp_path))


def test_max_train_examples_caps_only_train(tmp_path):
  path = tmp_path / 'd.csv'
  write_csv(path, ['text', 'label'], [(f'x{i}', 'ab'[i % 2]) for i in range(40)])
  dataset = data.get_dataset({'name': 'csv_text', 'file': str(path),
                              'max_train_examples': 5}, str(tmp_path / 'tfds'))
  assert {r: len(s) for r, s in dataset.splits.items()} == {
      'train': 5, 'validation': 4, 'test': 4}
  batch = next(data.iterate(data.train_dataset(dataset.splits['train'], global_batch_size=5,
                                                seed=0)))
  assert len(set(batch['id'])) == 5


def test_a_second_run_waits_for_the_one_preparing_the_data_then_reads_it(tmp_path):
  import threading

  path = tmp_path / 'd.csv'
  write_csv(path, ['text', 'label'], [(f'x{i}', 'ab'[i % 2]) for i in range(40)])
  data_dir = str(tmp_path / 'tfds')
  config = {'name': 'csv_text', 'file': str(path)}
  result = {}
  worker = threading.Thread(target=lambda: result.update(
      dataset=data.get_dataset(config, data_dir)))
  # Another run is preparing csv_text here: this one waits, touching nothing, and then
  # reads what the other prepared.
  with datasets.preparation_lock(data_dir, 'csv_text'):
    worker.start()
    worker.join(timeout=3)
    assert worker.is_alive() and 'dataset' not in result
    assert os.listdir(data_dir) == ['.csv_text.lock']
    builder_cls = data.LOCAL_BUILDERS['csv_text']
    builder_cls(data_dir=data_dir, config=builder_cls.make_config(file=str(path)),
                file_format=builders.FILE_FORMAT).download_and_prepare()
  worker.join(timeout=120)
  assert {r: len(s) for r, s in result['dataset'].splits.items()} == {
      'train': 32, 'validation': 4, 'test': 4}


def test_option_types_cover_every_local_builder():
  union = datasets.all_option_types()
  for name in data.LOCAL_BUILDERS:
    assert datasets.option_types(name).items() <= union.items()
  assert datasets.option_types('cifar100') == {}
  with pytest.raises(ValueError, match=r"unknown data option\(s\) \['file'\] for catalog"):
    data.get_dataset({'name': 'cifar100', 'file': 'x.csv', 'mock_examples': 2,
                      'splits': {'test': 'test'}}, 'unused')


def test_local_splits_survive_pickling_as_grain_workers_receive_them(shared_data_dir):
  for config in ({'name': 'ood_text'},  # the predefined config
                 {'name': 'ood_text', 'max_sentences': 50}):  # a custom one
    source = data.get_dataset(config, shared_data_dir).splits['test']
    copy = pickle.loads(pickle.dumps(source))
    assert len(copy) == len(source)
    assert [ex['id'] for ex in copy.__getitems__([0, 7])] == [
        source[0]['id'], source[7]['id']]
