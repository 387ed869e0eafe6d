"""`train.py --mode=predict` end to end: a finished tiny run scores new files, flags rows for
review, round-trips the test split, and refuses bad input in one line with status 2."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import train
from conftest import ROOT, tiny_train_argv, tiny_train_config, write_csv
from sve_jax.data import transforms
from sve_jax.train import run as run_lib

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def finished_run(tiny_bert_folder, shared_data_dir, tmp_path_factory):
  """A trained tiny run, its config and its test split as ``(texts, label names)``."""
  config = tiny_train_config(tiny_bert_folder, shared_data_dir)
  workdir = str(tmp_path_factory.mktemp('predict') / 'run')
  train.run(config, workdir, 'train')
  dataset, sources, _ = run_lib.load_data(config, workdir)
  test = [sources['test'][i] for i in range(len(sources['test']))]
  texts = transforms.decode_texts([e[dataset.input_key] for e in test])
  labels = [dataset.label_names[int(e[dataset.label_key])] for e in test]
  return workdir, texts, labels, dataset.label_names


def _predict(finished_run, tiny_bert_folder, shared_data_dir, tmp_path, *flags, workdir=None):
  argv = tiny_train_argv(tiny_bert_folder, shared_data_dir)
  argv = [a for a in argv if not a.startswith('--workdir')]
  return subprocess.run(
      [sys.executable, *argv, f'--workdir={workdir or finished_run[0]}', '--mode=predict',
       *flags], capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_predictions_on_the_test_split_reproduce_the_runs_own_test_scores(
    finished_run, tiny_bert_folder, shared_data_dir, tmp_path):
  workdir, texts, labels, names = finished_run
  source = tmp_path / 'test.csv'
  write_csv(source, ['id', 'text', 'label'],
            [[str(i), t, l] for i, (t, l) in enumerate(zip(texts, labels))])
  output = tmp_path / 'predictions.csv'
  proc = _predict(finished_run, tiny_bert_folder, shared_data_dir, tmp_path,
                  f'--input={source}', f'--output={output}', '--target_accuracy=0.5')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(output, newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['id'] for r in rows] == [str(i) for i in range(len(texts))]   # input order
  assert list(rows[0])[:3] == ['id', 'text', 'label']
  assert {'prediction', 'confidence', 'entropy', 'mutual_information', 'votes', 'review',
          *(f'p_{n}' for n in names)} <= set(rows[0])
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  # The same checkpoint on the same examples: the run's own test accuracy and NLL.
  right = np.mean([r['prediction'] == r['label'] for r in rows])
  nll = -np.mean([np.log(max(float(r[f'p_{r["label"]}']), 1e-12)) for r in rows])
  assert right == pytest.approx(results['test']['accuracy'])
  assert nll == pytest.approx(results['test']['nll'], abs=1e-4)
  section = results['predict']
  assert section['rows'] == len(texts) and section['accuracy'] == pytest.approx(right)
  assert section['threshold']['target'] == 'accuracy'
  flagged = [r['review'] == 'True' for r in rows]
  assert section['flagged_for_review'] == sum(flagged)
  assert all((float(r['confidence']) < section['threshold']['confidence']) == f
             for r, f in zip(rows, flagged))
  assert len(rows[0]['votes'].split('|')) == 2


def test_unlabelled_input_works_and_reports_no_accuracy(
    finished_run, tiny_bert_folder, shared_data_dir, tmp_path):
  source = tmp_path / 'new.jsonl'
  source.write_text('{"text": "what a day"}\n{"text": "the train is late again"}\n')
  output = tmp_path / 'out.csv'
  proc = _predict(finished_run, tiny_bert_folder, shared_data_dir, tmp_path,
                  f'--input={source}', f'--output={output}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(output, newline='') as f:
    assert [r['text'] for r in csv.DictReader(f)] == ['what a day', 'the train is late again']
  with open(os.path.join(finished_run[0], 'results.json')) as f:
    section = json.load(f)['predict']
  assert 'accuracy' not in section and section['threshold']['target'] == 'coverage'


@pytest.mark.parametrize('name,content,message', [
    ('no_text.csv', 'tweet,label\nhello,positive\n', "no_text.csv:2: no column 'text'"),
    ('empty.csv', '', 'empty.csv: the file is empty'),
    ('latin1.csv', 'text\ncaf\xe9 ok\n'.encode('latin-1'),
     "latin1.csv:2: bytes b'\\xe9' are not valid utf-8"),
])
def test_bad_input_fails_in_one_line_with_status_2_and_writes_nothing(
    name, content, message, finished_run, tiny_bert_folder, shared_data_dir, tmp_path):
  source = tmp_path / name
  if isinstance(content, bytes):
    source.write_bytes(content)
  else:
    source.write_text(content)
  output = tmp_path / 'out.csv'
  proc = _predict(finished_run, tiny_bert_folder, shared_data_dir, tmp_path,
                  f'--input={source}', f'--output={output}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  error_lines = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(error_lines) == 1 and message in error_lines[0]
  assert 'Traceback' not in proc.stderr
  assert not output.exists() and not (tmp_path / 'out.csv.partial').exists()


def test_a_workdir_without_a_finished_run_is_refused(
    finished_run, tiny_bert_folder, shared_data_dir, tmp_path):
  source = tmp_path / 'new.csv'
  source.write_text('text\nhello\n')
  proc = _predict(finished_run, tiny_bert_folder, shared_data_dir, tmp_path,
                  f'--input={source}', f'--output={tmp_path / "out.csv"}',
                  workdir=str(tmp_path / 'never_trained'))
  assert proc.returncode == 2 and 'holds no finished run' in proc.stderr
  assert 'Traceback' not in proc.stderr
