"""Tests of sve_jax.data: tfds builders read back without TF, splits, pipeline."""

import collections
import csv
import gzip
import importlib.util
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from sve_jax import data
from sve_jax.data import builders
from sve_jax.data import pipeline
from sve_jax.data import transforms
from sve_jax.data import readers

# The upstream Fashion-MNIST reader that Debian ships beside the data.
MNIST_READER = '/usr/share/doc/dataset-fashion-mnist/utils/mnist_reader.py'


def all_examples(source):
  return pipeline.read_examples(source, range(len(source)))


def ids_by_split(dataset, key='id'):
  return {role: sorted(int(ex[key]) for ex in all_examples(source))
          for role, source in dataset.splits.items()}


def assert_partition(parts, num_examples):
  """The parts are disjoint and together hold each of range(num_examples)."""
  merged = np.concatenate([np.asarray(p, int) for p in parts])
  np.testing.assert_array_equal(np.sort(merged), np.arange(num_examples))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def mnist_reader():
  spec = importlib.util.spec_from_file_location('mnist_reader', MNIST_READER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_tensorflow_is_not_installed():
  # Everything below must work without it.
  assert importlib.util.find_spec('tensorflow') is None


# ---------------------------------------------------------------- tweets


def test_tweet_sentiment_counts_splits_and_text(data_dir):
  dataset = data.get_dataset({'name': 'tweet_sentiment'}, data_dir)
  assert dataset.label_names == ('negative', 'neutral', 'positive')
  assert (dataset.input_key, dataset.label_key) == ('text', 'label')
  examples = {role: all_examples(s) for role, s in dataset.splits.items()}
  assert {r: len(e) for r, e in examples.items()} == {
      'train': 30526, 'validation': 3816, 'test': 3816}
  counts = collections.Counter(dataset.label_names[ex['label']]
                               for split in examples.values() for ex in split)
  assert counts == {'negative': 16186, 'neutral': 15018, 'positive': 6954}
  assert_partition([[ex['id'] for ex in e] for e in examples.values()], 38158)
  with open(builders.tweet_corpus_path(), encoding='latin-1', newline='') as f:
    rows = list(csv.DictReader(f))
  for ex in examples['test'][:50]:
    row = rows[ex['id']]
    assert ex['text'].decode('utf-8') == row['text']
    assert dataset.label_names[ex['label']] == row['sentiment']
  # A second call reuses the prepared files instead of writing them again.
  files = os.listdir(dataset.info.data_dir)
  stamps = {f: os.stat(os.path.join(dataset.info.data_dir, f)).st_mtime_ns for f in files}
  again = data.get_dataset({'name': 'tweet_sentiment'}, data_dir)
  assert again.info.data_dir == dataset.info.data_dir
  assert stamps == {f: os.stat(os.path.join(dataset.info.data_dir, f)).st_mtime_ns
                    for f in files}


def test_local_splits_survive_pickling_as_grain_workers_receive_them(data_dir):
  for options in ({'name': 'tweet_sentiment'},  # the predefined config
                  {'name': 'tweet_sentiment', 'split_seed': 3}):  # a custom one
    source = data.get_dataset(options, data_dir).splits['validation']
    copy = pickle.loads(pickle.dumps(source))
    assert len(copy) == len(source)
    assert [ex['id'] for ex in copy.__getitems__([0, 7])] == [
        source[0]['id'], source[7]['id']]


def test_tweets_carry_the_annotators_agreement(data_dir):
  dataset = data.get_dataset({'name': 'tweet_sentiment'}, data_dir)
  with open(builders.tweet_corpus_path(), encoding='latin-1', newline='') as f:
    confidence = [row['confidence'] for row in csv.DictReader(f)]
  agreement = {int(ex['id']): ex[builders.AGREEMENT_FEATURE]
               for ex in all_examples(dataset.splits['test'])}
  for row, value in agreement.items():
    if confidence[row].strip():
      assert value == pytest.approx(float(confidence[row]), abs=1e-6)
    else:
      assert np.isnan(value)
  assert 0 < sum(np.isnan(v) for v in agreement.values()) < len(agreement) / 4


def test_csv_agreement_column_allows_empty_cells_and_rejects_bad_values(tmp_path):
  rows = [(f'text {i}', 'ab'[i % 2], '' if i % 5 == 0 else f'{0.5 + i / 100:.2f}')
          for i in range(30)]
  path = tmp_path / 'rated.csv'
  write_csv(path, ['text', 'label', 'rating'], rows)
  config = {'name': 'csv_text', 'file': str(path), 'agreement_column': 'rating'}
  dataset = data.get_dataset(config, str(tmp_path / 'tfds'))
  for source in dataset.splits.values():
    for ex in all_examples(source):
      rating = rows[ex['id']][2]
      got = ex[builders.AGREEMENT_FEATURE]
      assert np.isnan(got) if not rating else got == pytest.approx(float(rating))
  assert builders.AGREEMENT_FEATURE not in data.get_dataset(
      {'name': 'csv_text', 'file': str(path)}, str(tmp_path / 'tfds')).info.features
  write_csv(path, ['text', 'label', 'rating'], rows[:5] + [('x', 'a', 'high')])
  with pytest.raises(ValueError, match=r"rated\.csv, data row 5: agreement 'high' is not"):
    data.get_dataset(config, str(tmp_path / 'tfds'))


def test_split_indices_partition_fixed_by_seed():
  fractions = {'train': 0.8, 'validation': 0.1, 'test': 0.1}
  first = readers.split_indices(1001, fractions, seed=0)
  assert {k: len(v) for k, v in first.items()} == {
      'train': 801, 'validation': 100, 'test': 100}
  assert_partition(first.values(), 1001)
  same = readers.split_indices(1001, fractions, seed=0)
  other = readers.split_indices(1001, fractions, seed=1)
  for name in fractions:
    np.testing.assert_array_equal(first[name], same[name])
    assert not np.array_equal(first[name], other[name])
  with pytest.raises(ValueError, match='sum to 1'):
    readers.split_indices(10, {'train': 0.8, 'test': 0.1}, seed=0)


# ---------------------------------------------------------------- user tables


def write_csv(path, header, rows):
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def test_csv_text_string_labels_and_seeded_splits(tmp_path):
  labels = ['pos', 'neg', 'neu']
  rows = [(f'téxt number {i}', labels[i % 3], i * 7) for i in range(60)]
  path = tmp_path / 'reviews.csv'
  write_csv(path, ['body', 'sentiment', 'other'], rows)
  config = {'name': 'csv_text', 'file': str(path), 'text_column': 'body',
            'label_column': 'sentiment'}
  dataset = data.get_dataset(config, str(tmp_path / 'a'))
  assert dataset.label_names == ('neg', 'neu', 'pos')
  for source in dataset.splits.values():
    for ex in all_examples(source):
      text, label, _ = rows[ex['id']]
      assert ex['text'].decode('utf-8') == text
      assert dataset.label_names[ex['label']] == label
  ids = ids_by_split(dataset)
  assert {k: len(v) for k, v in ids.items()} == {'train': 48, 'validation': 6, 'test': 6}
  assert_partition(ids.values(), 60)
  # Prepared afresh elsewhere: the same seed gives the same split, another not.
  assert ids_by_split(data.get_dataset(config, str(tmp_path / 'b'))) == ids
  reseeded = ids_by_split(data.get_dataset({**config, 'split_seed': 1}, str(tmp_path / 'a')))
  assert reseeded['test'] != ids['test']
  assert_partition(reseeded.values(), 60)


def test_jsonl_split_files_with_integer_labels(tmp_path):
  files = {}
  for split, count in (('train', 24), ('test', 12)):
    files[split] = str(tmp_path / f'{split}.jsonl')
    with open(files[split], 'w') as f:
      for i in range(count):
        f.write(json.dumps({'sentence': f'{split} {i}', 'y': i % 12}) + '\n')
  dataset = data.get_dataset(
      {'name': 'csv_text', 'split_files': files, 'text_column': 'sentence',
       'label_column': 'y'}, str(tmp_path / 'tfds'))
  # Numeric order: label '10' is class 10, not class 2.
  assert dataset.label_names == tuple(str(i) for i in range(12))
  assert {r: len(s) for r, s in dataset.splits.items()} == {'train': 24, 'test': 12}
  for ex in all_examples(dataset.splits['train']):
    assert ex['label'] == ex['id'] % 12
    assert ex['text'] == f'train {ex["id"]}'.encode()


def test_missing_column_names_file_and_column(tmp_path):
  path = tmp_path / 'bad.csv'
  write_csv(path, ['body', 'label'], [('a', 'x'), ('b', 'y')])
  with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['text'\].*'body', 'label'"):
    data.get_dataset({'name': 'csv_text', 'file': str(path)}, str(tmp_path / 'tfds'))
  jsonl = tmp_path / 'bad.jsonl'
  jsonl.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
  with pytest.raises(ValueError, match=r"bad\.jsonl:2: missing key\(s\) \['label'\]"):
    data.get_dataset({'name': 'csv_text', 'file': str(jsonl)}, str(tmp_path / 'tfds'))
  with pytest.raises(ValueError, match="unknown option.*'colour'"):
    data.get_dataset({'name': 'tweet_sentiment', 'colour': 'red'}, str(tmp_path / 'tfds'))


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


# ---------------------------------------------------------------- images


@pytest.mark.parametrize('kind, per_class', [('train', 6000), ('t10k', 1000)])
def test_read_idx_matches_reference_reader(mnist_reader, kind, per_class):
  images, labels = mnist_reader.load_mnist(builders.FASHION_MNIST_DIR, kind=kind)
  ours_images = readers.read_idx(os.path.join(
      builders.FASHION_MNIST_DIR, f'{kind}-images-idx3-ubyte.gz'))
  ours_labels = readers.read_idx(os.path.join(
      builders.FASHION_MNIST_DIR, f'{kind}-labels-idx1-ubyte.gz'))
  assert ours_images.shape == (len(labels), 28, 28) and ours_images.dtype == np.uint8
  np.testing.assert_array_equal(ours_images.reshape(len(labels), 784), images)
  np.testing.assert_array_equal(ours_labels, labels)
  np.testing.assert_array_equal(np.bincount(ours_labels), [per_class] * 10)


def test_read_idx_raw_file_and_truncation(tmp_path):
  with gzip.open(os.path.join(builders.FASHION_MNIST_DIR,
                              't10k-labels-idx1-ubyte.gz')) as f:
    raw = f.read()
  (tmp_path / 'labels-idx1-ubyte').write_bytes(raw)
  labels = readers.read_idx(tmp_path / 'labels-idx1-ubyte')
  np.testing.assert_array_equal(labels, np.frombuffer(raw, np.uint8, offset=8))
  (tmp_path / 'short').write_bytes(raw[:-3])
  with pytest.raises(ValueError, match=r'short: IDX header declares shape \(10000,\)'):
    readers.read_idx(tmp_path / 'short')


def test_fashion_mnist_builder_reads_back(tmp_path, mnist_reader):
  dataset = data.get_dataset(
      {'name': 'fashion_mnist_local', 'max_examples_per_split': 200}, str(tmp_path))
  assert dataset.label_names[0] == 'T-shirt/top' and dataset.num_classes == 10
  for role, kind in (('train', 'train'), ('test', 't10k')):
    images, labels = mnist_reader.load_mnist(builders.FASHION_MNIST_DIR, kind=kind)
    examples = all_examples(dataset.splits[role])
    assert sorted(ex['id'] for ex in examples) == list(range(200))
    for ex in examples:
      assert ex['image'].shape == (28, 28, 1) and ex['image'].dtype == np.uint8
      np.testing.assert_array_equal(ex['image'].ravel(), images[ex['id']])
      assert ex['label'] == labels[ex['id']]


def test_digits_ood_matches_sklearn(data_dir):
  from sklearn.datasets import load_digits
  digits = load_digits()
  dataset = data.get_dataset({'name': 'digits_ood'}, data_dir)
  examples = all_examples(dataset.splits['test'])
  assert sorted(ex['id'] for ex in examples) == list(range(1797))
  for ex in examples[:100]:
    assert ex['image'].shape == (8, 8, 1) and ex['image'].dtype == np.uint8
    np.testing.assert_allclose(ex['image'][..., 0].astype(float) * 16 / 255, digits.images[ex['id']],
                               atol=8 / 255)
    assert ex['label'] == digits.target[ex['id']]


def test_ood_text_sentences(data_dir):
  dataset = data.get_dataset({'name': 'ood_text'}, data_dir)
  assert list(dataset.splits) == ['test'] and dataset.label_key is None
  texts = [ex['text'].decode() for ex in all_examples(dataset.splits['test'])]
  assert 1500 <= len(texts) <= 2000 and len(set(texts)) == len(texts)
  assert all(6 <= len(t.split()) <= 40 and t.endswith('.') for t in texts)
  assert 'os' in dataset.info.metadata['modules']


# ---------------------------------------------------------------- tfds catalog


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


# ---------------------------------------------------------------- pipeline


def toy_source(n):
  return [{'x': np.float32(i), 'text': f't{i}'.encode()} for i in range(n)]


def train_stream(source, *, state=None, num_workers=0, **kwargs):
  """The whole training stream of `data.train_dataset(source, **kwargs)`, as a list."""
  return list(data.iterate(data.train_dataset(source, **kwargs), state=state,
                           num_workers=num_workers))


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
  source = toy_source(50)
  run = train_stream(source, global_batch_size=8, seed=0, num_epochs=3)
  assert len(run) == 3 * (50 // 8)
  again = train_stream(source, global_batch_size=8, seed=0, num_epochs=3)
  other = train_stream(source, global_batch_size=8, seed=1, num_epochs=3)
  order = [b['index'] for b in run]
  np.testing.assert_array_equal(order, [b['index'] for b in again])
  assert not np.array_equal(order, [b['index'] for b in other])
  for batch in run:
    np.testing.assert_array_equal(batch['x'], batch['index'])  # Right examples read.
  epochs = [np.concatenate(order[6 * e:6 * e + 6]) for e in range(3)]
  for epoch in epochs:  # 48 distinct examples; the 2 left over are dropped, not carried over.
    assert len(set(epoch)) == 48 and set(epoch) <= set(range(50))
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
  # Seeds s and s + 1 (ensemble members) do not share an epoch's order one epoch apart.
  other_epoch0 = np.concatenate([b['index'] for b in other[:6]])
  assert not np.array_equal(epochs[1], other_epoch0)


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_slices_partition_each_global_batch(process_count):
  source = toy_source(70)
  single = train_stream(source, global_batch_size=16, seed=3, num_epochs=2)
  per_process = [train_stream(source, global_batch_size=16, seed=3, num_epochs=2,
                              process_index=p, process_count=process_count)
                 for p in range(process_count)]
  assert {len(run) for run in per_process} == {len(single)} == {8}
  for step, batch in enumerate(single):
    parts = [run[step]['index'] for run in per_process]
    assert all(len(part) == 16 // process_count for part in parts)
    np.testing.assert_array_equal(np.concatenate(parts), batch['index'])
    np.testing.assert_array_equal(
        np.concatenate([run[step]['example_seed'] for run in per_process]),
        batch['example_seed'])
  with pytest.raises(ValueError, match='divisible by the process count 3'):
    train_stream(source, global_batch_size=16, seed=3, process_count=3, num_epochs=1)


def test_eval_batches_cover_each_example_once_in_order():
  source = toy_source(23)
  per_process = [list(data.eval_batches(source, global_batch_size=8, process_index=p,
                                        process_count=2)) for p in range(2)]
  assert [len(batches) for batches in per_process] == [3, 3] == [data.num_eval_batches(23, 8)] * 2
  positions = []
  for step in range(3):
    for batches in per_process:
      batch = batches[step]
      assert batch['x'].shape == (4,) and batch['mask'].dtype == bool
      np.testing.assert_array_equal(batch['mask'], batch['index'] >= 0)
      np.testing.assert_array_equal(batch['x'][batch['mask']], batch['index'][batch['mask']])
      positions.extend(batch['index'])
  # Global batches in source order, padded at the end only.
  np.testing.assert_array_equal(positions, list(range(23)) + [-1])
  with pytest.raises(ValueError, match='empty'):
    data.eval_dataset([], global_batch_size=8)


def test_resume_from_a_saved_state_continues_the_same_stream():
  rng = np.random.default_rng(0)
  source = [{'image': rng.integers(0, 256, (9, 7, 3), dtype=np.uint8), 'label': i % 5}
            for i in range(30)]
  transform = transforms.image_transform(size=(5, 5), augment=True)
  kwargs = dict(global_batch_size=4, seed=11, num_epochs=3, transform=transform)
  full = train_stream(source, **kwargs)
  assert len(full) == 3 * 7
  for done in (3, 10):  # mid-epoch, and across an epoch boundary (7 steps an epoch)
    batches = data.iterate(data.train_dataset(source, **kwargs))
    for _ in range(done):
      next(batches)
    state = json.loads(json.dumps(batches.get_state()))  # as a checkpoint's meta holds it
    resumed = train_stream(source, state=state, **kwargs)  # a rebuilt pipeline
    assert len(resumed) == len(full) - done
    for expected, got in zip(full[done:], resumed):
      np.testing.assert_array_equal(got['image'], expected['image'])  # same crops and flips
      np.testing.assert_array_equal(got['label'], expected['label'])


def test_worker_processes_give_the_same_batches_and_resume_exactly():
  from absl import flags  # grain's workers read absl flags, parsed under train.py's app.run
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  source = toy_source(20)
  kwargs = dict(global_batch_size=4, seed=2, num_epochs=2)
  in_process = [b['index'] for b in train_stream(source, **kwargs)]
  batches = data.iterate(data.train_dataset(source, **kwargs), num_workers=2)
  try:
    head = [next(batches)['index'] for _ in range(3)]
    state = json.loads(json.dumps(batches.get_state()))  # as a checkpoint's meta holds it
    tail = [b['index'] for b in batches]
  finally:
    batches.close()
  np.testing.assert_array_equal(head + tail, in_process)
  assert len(in_process) == 10
  resumed = data.iterate(data.train_dataset(source, **kwargs), num_workers=2, state=state)
  try:
    np.testing.assert_array_equal([b['index'] for b in resumed], in_process[3:])
  finally:
    resumed.close()


def test_subsample_is_seeded_and_distinct():
  source = toy_source(100)
  subset = data.subsample(source, 10, seed=0)
  xs = [ex['x'] for ex in all_examples(subset)]
  assert len(subset) == 10 and len(set(xs)) == 10
  assert xs == [ex['x'] for ex in all_examples(data.subsample(source, 10, seed=0))]
  assert xs != [ex['x'] for ex in all_examples(data.subsample(source, 10, seed=1))]
  assert data.subsample(source, 1000, seed=0) is source


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


# ---------------------------------------------------------------- preprocessing


def test_normalize_images_known_values():
  images = np.array([0, 51, 255], np.uint8).reshape(1, 1, 3, 1)
  out = transforms.normalize_images(images, mean=[0.5], std=[0.25])
  np.testing.assert_allclose(out.ravel(), [-2.0, -1.2, 2.0], rtol=1e-6)
  assert out.dtype == np.float32


def test_augmentation_is_seeded_crop_and_flip():
  image = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
  seeds = pipeline.example_seeds(seed=0, epoch=0, indices=np.arange(64))
  out = transforms.augment_images([image] * 64, seeds, (6, 10))
  np.testing.assert_array_equal(out, transforms.augment_images([image] * 64, seeds, (6, 10)))
  assert len({o.tobytes() for o in out}) > 32  # Different seeds crop differently.
  # A crop of the whole image leaves only the flip: identity or a mirror.
  whole = transforms.augment_images([image] * 64, seeds, (6, 10),
                                    scale=(1.0, 1.0), ratio=(10 / 6, 10 / 6))
  flipped = [bool((o == image[:, ::-1]).all()) for o in whole]
  assert all(f or (o == image).all() for f, o in zip(flipped, whole))
  assert 0 < sum(flipped) < 64
  later = pipeline.example_seeds(seed=0, epoch=1, indices=np.arange(64))
  assert not np.array_equal(later, seeds)


def test_crop_boxes_stay_inside_the_image():
  rng = np.random.default_rng(0)
  for height, width in [(32, 32), (5, 40), (300, 7), (1, 1)]:
    for _ in range(50):
      top, left, h, w = transforms.random_resized_crop_box(height, width, rng)
      assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
      assert h > 0 and w > 0


def test_text_transform_decodes_and_keeps_mask():
  batch = {'text': [b'h\xc3\xa9llo', 'plain'], 'label': np.array([2, 0]),
           'mask': np.array([True, False])}
  received = []

  def tokenize(texts):
    received.extend(texts)
    return {'input_ids': np.zeros((len(texts), 4), np.int32)}

  out = transforms.text_transform(tokenize)(batch)
  assert received == ['héllo', 'plain']
  assert out['label'].dtype == np.int32 and out['label'].tolist() == [2, 0]
  assert out['mask'].tolist() == [True, False] and out['input_ids'].shape == (2, 4)


def test_resize_and_channels_for_mixed_sizes():
  images = [np.full((4, 9, 1), 7, np.uint8), np.full((12, 3, 1), 200, np.uint8)]
  out = transforms.to_channels(transforms.resize_images(images, (5, 5)), 3)
  assert out.shape == (2, 5, 5, 3)
  assert (out[0] == 7).all() and (out[1] == 200).all()
