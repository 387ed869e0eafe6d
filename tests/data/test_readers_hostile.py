"""Hostile user data: each case gets an early error naming the file, the line/row or path and
the problem (or a documented, counted skip), never a crash deep in tfds or JAX.

The checks run when a data set is prepared (before any model is built), so they are called
here through the readers or `data.get_dataset` directly.
"""
import json
import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from sve_jax import data
from sve_jax.data import readers


def csv_text(tmp_path, name: str, content: str | bytes, **options):
  """Writes a table file and prepares it as `csv_text`; returns the Dataset."""
  path = tmp_path / name
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content, encoding='utf-8')
  return data.get_dataset({'name': 'csv_text', 'file': str(path), **options},
                          str(tmp_path / 'tfds'))


def rows(n: int, labels=('a', 'b')) -> str:
  return ''.join(f'text {i},{labels[i % len(labels)]}\n' for i in range(n))


# ---------------------------------------------------------------- tables


@pytest.mark.parametrize('name,content,message', [
    ('empty.csv', '', r'empty\.csv: the file is empty'),
    ('empty.jsonl', '', r'empty\.jsonl: the file is empty'),
    ('header_only.csv', 'text,label\n', r'header_only\.csv: no data rows after the header'),
    ('blank.jsonl', '\n\n', r'blank\.jsonl: no data rows\.'),
])
def test_empty_files(name, content, message, tmp_path):
  with pytest.raises(ValueError, match=message):
    csv_text(tmp_path, name, content)


def test_header_without_the_named_columns(tmp_path):
  with pytest.raises(ValueError, match=r"reviews\.csv: missing column\(s\) \['label'\]; the "
                                       r"header has columns \['text', 'stars'\]"):
    csv_text(tmp_path, 'reviews.csv', 'text,stars\n' + rows(4))
  with pytest.raises(ValueError, match=r"reviews\.csv: missing column\(s\) \['body'\]"):
    csv_text(tmp_path, 'reviews.csv', 'text,label\n' + rows(4), text_column='body')


@pytest.mark.parametrize('bad_row,column', [(' ,a', 'text'), ('text 9,', 'label'),
                                            ('only one field', 'label')])
def test_row_with_an_empty_text_or_label(bad_row, column, tmp_path):
  content = 'text,label\n' + rows(3) + bad_row + '\n' + rows(2)
  # Line 5: the header is line 1, then three good rows.
  with pytest.raises(ValueError, match=rf"rows\.csv:5: empty value in column '{column}'"):
    csv_text(tmp_path, 'rows.csv', content)


def test_jsonl_empty_label_names_the_line(tmp_path):
  lines = [{'text': 'fine', 'label': 'a'}, {'text': 'no label', 'label': ''}]
  with pytest.raises(ValueError, match=r"rows\.jsonl:2: empty value in column 'label'"):
    csv_text(tmp_path, 'rows.jsonl', '\n'.join(map(json.dumps, lines)) + '\n')


def test_invalid_utf8_names_the_line_and_the_bytes(tmp_path):
  content = ('text,label\n' + rows(3)).encode() + b'caf\xe9 latin-1,a\n' + rows(2).encode()
  with pytest.raises(ValueError, match=r"latin\.csv:5: bytes b'\\xe9' are not valid utf-8 "
                                       r".*set the data option `encoding`"):
    csv_text(tmp_path, 'latin.csv', content)
  # The same file with the right encoding option is read, the text decoded as latin-1.
  dataset = csv_text(tmp_path, 'latin.csv', content, encoding='latin-1',
                     split_fractions={'train': 1.0})
  texts = {ex['text'].decode() for ex in dataset.splits['train']}
  assert 'café latin-1' in texts


def test_a_wrong_encoding_option_names_the_line(tmp_path):
  content = ('text,label\n' + rows(2) + 'naïve,b\n').encode('utf-8')
  with pytest.raises(ValueError, match=r"utf8\.csv:4: bytes b'\\xc3' are not valid ascii"):
    csv_text(tmp_path, 'utf8.csv', content, encoding='ascii')


def test_unknown_encoding_option(tmp_path):
  with pytest.raises(ValueError, match=r"ok\.csv: unknown encoding 'utf-9' \(data option "
                                       r"`encoding`\)"):
    csv_text(tmp_path, 'ok.csv', 'text,label\n' + rows(4), encoding='utf-9')


def test_jsonl_lines_that_are_not_objects(tmp_path):
  content = '{"text": "x", "label": "a"}\n["text", "a"]\n'
  with pytest.raises(ValueError, match=r"lines\.jsonl:2: expected a JSON object per line, "
                                       r"got a list"):
    csv_text(tmp_path, 'lines.jsonl', content)
  with pytest.raises(ValueError, match=r'lines\.jsonl:1: expected a JSON object per line, '
                                       r'got a str'):
    csv_text(tmp_path, 'lines.jsonl', '"just a string"\n')
  with pytest.raises(ValueError, match=r'lines\.jsonl:2: invalid JSON'):
    csv_text(tmp_path, 'lines.jsonl', '{"text": "x", "label": "a"}\n{text: x}\n')


@pytest.mark.parametrize('name', ['huge.csv', 'huge.jsonl'])
def test_a_50_mb_single_field_is_refused_by_line(name, tmp_path):
  huge = 'x' * (50 << 20)
  if name.endswith('.csv'):
    content = 'text,label\n' + rows(2) + f'{huge},a\n'
  else:
    content = json.dumps({'text': 'ok', 'label': 'a'}) + '\n' + json.dumps(
        {'text': huge, 'label': 'a'}) + '\n'
  where = re.escape(f'{name}:{4 if name.endswith(".csv") else 2}:')
  with pytest.raises(ValueError, match=where + r' the line has 52,428,8\d\d characters '
                                       r'\(limit 1,048,576\)'):
    csv_text(tmp_path, name, content)


def test_an_unbalanced_quote_is_caught_at_the_field_limit(tmp_path):
  # A quote left open swallows every later line into one field.
  lines = ['text,label', '"opened and never closed,a'] + ['x' * 1000 + ',b'] * 1100
  with pytest.raises(ValueError, match=r'quote\.csv:\d+: field larger than field limit '
                                       r'.*is a quote left open on an earlier line'):
    csv_text(tmp_path, 'quote.csv', '\n'.join(lines) + '\n')


# ---------------------------------------------------------------- classes and splits


def write_jsonl(path, labels):
  with open(path, 'w') as f:
    for i, label in enumerate(labels):
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
  labels = ['a', 'b'] * 10
  labels[7] = 'rare'
  path = write_jsonl(tmp_path / 'all.jsonl', labels)
  fractions = {'train': 0.5, 'test': 0.5}
  seed = next(s for s in range(50)
              if 7 not in readers.split_indices(20, fractions, s)['train'])
  with pytest.raises(ValueError, match=r"'rare' only in test \(.*all\.jsonl, rows \[7\]\)"):
    data.get_dataset({'name': 'csv_text', 'file': path, 'split_fractions': fractions,
                      'split_seed': seed}, str(tmp_path / 'tfds'))


def test_a_declared_label_with_no_example_at_all(tmp_path):
  path = write_jsonl(tmp_path / 'all.jsonl', ['a', 'b'] * 5)
  with pytest.raises(ValueError, match=r"'c' has no example at all"):
    data.get_dataset({'name': 'csv_text', 'file': path, 'label_names': ['a', 'b', 'c']},
                     str(tmp_path / 'tfds'))


# ---------------------------------------------------------------- image folders


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
    files = readers.list_image_folder(root)
  assert len(files) == 8 and all(not f.endswith(('.txt', '.csv')) for f, _ in files)
  assert "skipped 2 file(s) without an image suffix" in caplog.text
  assert 'cat/notes.txt' in caplog.text and 'dog/labels.csv' in caplog.text


def test_grayscale_and_rgba_pngs_become_rgb(tmp_path):
  root = image_folder(tmp_path)
  Image.new('L', (6, 5), 77).save(root / 'cat' / 'grey.png')
  Image.new('RGBA', (6, 5), (10, 20, 30, 0)).save(root / 'dog' / 'clear.png')
  Image.new('LA', (6, 5), (90, 128)).save(root / 'dog' / 'grey_alpha.png')
  dataset = prepare_images(root, tmp_path)
  images = {ex['file_name'].decode(): ex['image']
            for source in dataset.splits.values() for ex in source}
  assert len(images) == 11
  expected = {'cat/grey.png': (77, 77, 77), 'dog/clear.png': (10, 20, 30),
              'dog/grey_alpha.png': (90, 90, 90)}
  for name, rgb in expected.items():
    assert images[name].shape == (4, 4, 3)
    np.testing.assert_array_equal(images[name], np.broadcast_to(rgb, (4, 4, 3)))


def test_an_empty_class_folder_is_refused_by_path(tmp_path):
  root = image_folder(tmp_path)
  os.makedirs(root / 'emu')
  (root / 'emu' / 'readme.txt').write_text('no pictures yet')
  with pytest.raises(ValueError, match=r'photos/emu: class folder without image files'):
    prepare_images(root, tmp_path)
