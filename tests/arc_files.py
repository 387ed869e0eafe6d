"""A tiny ARC-Easy on disk: the real tfds catalog builder (`ai2_arc/ARC-Easy`) prepared from
local JSON lines in ARC's own download layout, so its features are the catalog's exactly.

Its quirks are the real data's: questions with 3, 4 and 5 choices, and questions labelled
1-4 instead of A-D.
"""
import json
import os
from unittest import mock

import tensorflow_datasets as tfds

NAME = 'ai2_arc/ARC-Easy'
_FILES = {'train': 'Train', 'validation': 'Dev', 'test': 'Test'}


def question(qid, stem, choices, answer, labels='ABCDE'):
  """One row as ARC's JSON lines hold it: ``choices`` texts labelled ``labels[i]``."""
  return {'id': qid, 'answerKey': answer,
          'question': {'stem': stem, 'choices': [{'text': t, 'label': labels[i]}
                                                 for i, t in enumerate(choices)]}}


def stand_in_rows(split, n):
  """``n`` questions for ``split``: 4 choices mostly, every 5th one with 3, every 7th with 5,
  every 3rd labelled 1-4 (digits); answers cycle over the offered choices."""
  rows = []
  for i in range(n):
    k = 3 if i % 5 == 4 else 5 if i % 7 == 6 else 4
    labels = '12345' if i % 3 == 2 else 'ABCDE'
    choices = [f'choice {c} of {split} {i}' for c in range(k)]
    rows.append(question(f'{split}-{i}', f'Which one is {split} {i}?', choices,
                         labels[i % k], labels))
  return rows


def prepare(data_dir, rows_by_split):
  """Prepares ``ai2_arc/ARC-Easy`` as array_record into ``data_dir`` from ``{split: rows}``
  (train, validation, test), its download replaced by a folder of those rows."""
  source = os.path.join(data_dir, '_arc_source')
  folder = os.path.join(source, 'ARC-V1-Feb2018-2', 'ARC-Easy')
  os.makedirs(folder, exist_ok=True)
  for split, suffix in _FILES.items():
    with open(os.path.join(folder, f'ARC-Easy-{suffix}.jsonl'), 'w') as f:
      f.writelines(json.dumps(row) + '\n' for row in rows_by_split[split])
  builder = tfds.builder(NAME, data_dir=data_dir)
  with mock.patch.object(tfds.download.DownloadManager, 'download_and_extract',
                         return_value=source):
    builder.download_and_prepare(file_format='array_record')
  return builder
