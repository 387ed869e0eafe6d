"""Tables of text examples (`sve_jax.data.tables`): values read back as written, and hostile
files stopped early with an error that names the file, the line and the problem.

The hostile cases go through `data.get_dataset` with the `csv_text` builder, the way a user's
file reaches the reader.
"""
import csv
import json
import re

import numpy as np
import pytest

from sve_jax import data
from sve_jax.data import tables


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


# ---------------------------------------------------------------- values read back


def random_texts(rng, n):
  """Texts with what CSV must quote: commas, quotes, tabs, line breaks, non-ASCII."""
  pieces = ['plain', 'a, comma', 'a "quote"', 'tab\there', 'line\nbreak', 'ünï çødé', ' pad ']
  return [' '.join(rng.choice(pieces, size=rng.integers(1, 4))) for _ in range(n)]


@pytest.mark.parametrize('suffix', ['.csv', '.tsv', '.jsonl'])
def test_read_table_returns_the_values_written(suffix, tmp_path):
  rng = np.random.default_rng(0)
  texts = random_texts(rng, 40)
  labels = [str(v) for v in rng.integers(0, 5, 40)]
  path = tmp_path / f'table{suffix}'
  if suffix == '.jsonl':
    path.write_text(''.join(json.dumps({'t': t, 'y': int(y), 'extra': 1}) + '\n'
                            for t, y in zip(texts, labels)), encoding='utf-8')
  else:
    with open(path, 'w', newline='', encoding='utf-8') as f:
      writer = csv.writer(f, delimiter='\t' if suffix == '.tsv' else ',')
      writer.writerow(['extra', 't', 'y'])
      writer.writerows(('x', t, y) for t, y in zip(texts, labels))
  got = tables.read_table(path, ('t', 'y'))
  assert got == {'t': texts, 'y': labels}


def test_table_rows_keep_every_column_and_number_the_lines(tmp_path):
  path = tmp_path / 'rows.jsonl'
  path.write_text('{"a": "1", "b": 2}\n\n{"a": "3", "b": 4, "c": null}\n', encoding='utf-8')
  with tables.table_lines(path, 'utf-8', header_lines=0) as lines:
    got = list(tables.table_rows(lines, 'jsonl', path))
  assert got == [(1, {'a': '1', 'b': 2}), (3, {'a': '3', 'b': 4, 'c': None})]
  path = tmp_path / 'rows.csv'
  path.write_text('a,b\n1,"x\ny"\n3,z\n', encoding='utf-8')
  with tables.table_lines(path, 'utf-8', header_lines=1) as lines:
    got = list(tables.table_rows(lines, 'csv', path))
  # The header is line 1; a record's number counts records, as csv.DictReader does.
  assert got == [(2, {'a': '1', 'b': 'x\ny'}), (3, {'a': '3', 'b': 'z'})]


def test_an_unknown_suffix_names_the_known_ones(tmp_path):
  with pytest.raises(ValueError, match=r"unsupported table suffix '\.xlsx'.*'\.csv'"):
    tables.read_table(tmp_path / 'sheet.xlsx', ('text',))


# ---------------------------------------------------------------- hostile files


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


def test_a_jsonl_record_without_a_named_key_names_the_line(tmp_path):
  jsonl = tmp_path / 'bad.jsonl'
  jsonl.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
  with pytest.raises(ValueError, match=r"bad\.jsonl:2: missing key\(s\) \['label'\]"):
    data.get_dataset({'name': 'csv_text', 'file': str(jsonl)}, str(tmp_path / 'tfds'))


@pytest.mark.parametrize('bad_row,column', [(' ,a', 'text'), ('text 9,', 'label'),
                                            ('only one field', 'label')])
def test_row_with_an_empty_text_or_label(bad_row, column, tmp_path):
  content = 'text,label\n' + rows(3) + bad_row + '\n' + rows(2)
  # Line 5: the header is line 1, then three good rows.
  with pytest.raises(ValueError, match=rf"rows\.csv:5: empty value in column '{column}'"):
    csv_text(tmp_path, 'rows.csv', content)


def test_a_row_with_more_fields_than_the_header_names_the_line(tmp_path):
  content = 'text,label\n' + rows(2) + 'an unquoted, comma,b\n' + rows(1)
  with pytest.raises(ValueError, match=r"rows\.csv:4: 3 fields, but the header has 2 columns"):
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
