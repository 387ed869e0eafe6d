"""The `csv_text` and `tweet_sentiment` builders: tables prepared into tfds and read back
without TF, with the values, labels, splits and annotator agreement of the source files."""
import csv
import json
import os

import numpy as np
import pytest

from sve_jax import data
from sve_jax.data import builders

from conftest import all_examples, assert_partition, write_csv


def ids_by_split(dataset, key='id'):
  return {role: sorted(int(ex[key]) for ex in all_examples(source))
          for role, source in dataset.splits.items()}


# ---------------------------------------------------------------- tweet_sentiment


@pytest.mark.slow  # prepares the 38,158 tweets
def test_tweet_sentiment_counts_splits_and_text(shared_data_dir):
  dataset = data.get_dataset({'name': 'tweet_sentiment'}, shared_data_dir)
  assert dataset.label_names == builders.TWEET_LABELS == ('negative', 'neutral', 'positive')
  assert (dataset.input_key, dataset.label_key) == ('text', 'label')
  examples = {role: all_examples(s) for role, s in dataset.splits.items()}
  assert {r: len(e) for r, e in examples.items()} == {
      'train': 30526, 'validation': 3816, 'test': 3816}
  counts = {name: 0 for name in dataset.label_names}
  for split in examples.values():
    for ex in split:
      counts[dataset.label_names[ex['label']]] += 1
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
  again = data.get_dataset({'name': 'tweet_sentiment'}, shared_data_dir)
  assert again.info.data_dir == dataset.info.data_dir
  assert stamps == {f: os.stat(os.path.join(dataset.info.data_dir, f)).st_mtime_ns
                    for f in files}


@pytest.mark.slow  # prepares the 38,158 tweets, unless an earlier test did
def test_tweets_carry_the_annotators_agreement(shared_data_dir):
  dataset = data.get_dataset({'name': 'tweet_sentiment'}, shared_data_dir)
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


# ---------------------------------------------------------------- csv_text


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


def test_an_edited_file_is_prepared_again(tmp_path):
  path = tmp_path / 'd.csv'
  write_csv(path, ['text', 'label'], [(f'x{i}', 'ab'[i % 2]) for i in range(20)])
  first = data.get_dataset({'name': 'csv_text', 'file': str(path)}, str(tmp_path / 'tfds'))
  write_csv(path, ['text', 'label'], [(f'y{i}', 'ab'[i % 2]) for i in range(30)])
  second = data.get_dataset({'name': 'csv_text', 'file': str(path)}, str(tmp_path / 'tfds'))
  assert first.info.data_dir != second.info.data_dir
  assert sum(len(s) for s in second.splits.values()) == 30


def test_csv_text_needs_its_config():
  with pytest.raises(ValueError, match=r'give exactly one of `file`'):
    builders.CsvText.make_config(text_column='t')
