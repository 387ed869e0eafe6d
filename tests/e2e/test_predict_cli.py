"""`train.py --mode=predict` end to end: a finished tiny run scores new files, flags rows for
review, round-trips the test split (from its best checkpoint, from its trainables file alone,
and as an image folder), and refuses bad input in one line with status 2."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import train
from conftest import (ROOT, override, prediction_scores, read_csv_rows, tiny_train_argv,
                      tiny_train_config, write_csv)
from sve_jax import export
from sve_jax.data import transforms
from sve_jax.train import run as run_lib
from sve_jax.train.predict import PredictRequest
from sve_jax.train.user_errors import user_error_message

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


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def test_split_predictions(finished_run, tiny_bert_folder, shared_data_dir, tmp_path_factory):
  """``train.py --mode=predict`` (a subprocess) on the finished run's test split written as a
  CSV: ``(the CSV, its predictions' rows, results.json right after)``."""
  workdir, texts, labels, _ = finished_run
  folder = tmp_path_factory.mktemp('test_split')
  source = folder / 'test.csv'
  write_csv(source, ['id', 'text', 'label'],
            [[str(i), t, l] for i, (t, l) in enumerate(zip(texts, labels))])
  output = folder / 'predictions.csv'
  proc = _predict(finished_run, tiny_bert_folder, shared_data_dir, folder,
                  f'--input={source}', f'--output={output}', '--target_accuracy=0.5')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return source, read_csv_rows(output), _results(workdir)


def test_predictions_on_the_test_split_reproduce_the_runs_own_test_scores(
    finished_run, test_split_predictions):
  workdir, texts, labels, names = finished_run
  _, rows, results = test_split_predictions
  assert [r['id'] for r in rows] == [str(i) for i in range(len(texts))]   # input order
  assert list(rows[0])[:3] == ['id', 'text', 'label']
  assert {'prediction', 'confidence', 'entropy', 'mutual_information', 'votes', 'review',
          *(f'p_{n}' for n in names)} <= set(rows[0])
  # The same checkpoint on the same examples: the run's own test accuracy, NLL and Brier.
  scores = prediction_scores(rows, labels, names)
  assert scores == pytest.approx({k: results['test'][k] for k in scores}, abs=1e-4)
  section = results['predict']
  assert section['rows'] == len(texts)
  assert section['accuracy'] == pytest.approx(scores['accuracy'])
  assert section['trainables'] == {
      'source': 'best_checkpoint', 'path': os.path.join(workdir, 'checkpoints', 'best'),
      'step': results['checkpoint']['best_step']}
  assert section['threshold']['target'] == 'accuracy'
  flagged = [r['review'] == 'True' for r in rows]
  assert section['flagged_for_review'] == sum(flagged)
  assert all((float(r['confidence']) < section['threshold']['confidence']) == f
             for r, f in zip(rows, flagged))
  assert len(rows[0]['votes'].split('|')) == 2


def _copy_without_checkpoints(workdir, to):
  """A workdir holding only what a user kept of a run: results.json and the trainables file."""
  to.mkdir()
  for name in ('results.json', export.TRAINABLES_FILENAME):
    shutil.copy(os.path.join(workdir, name), to / name)
  return str(to)


def test_the_trainables_file_alone_predicts_as_the_best_checkpoint_does(
    finished_run, test_split_predictions, tiny_bert_folder, shared_data_dir, tmp_path):
  source, from_checkpoint, _ = test_split_predictions
  kept = _copy_without_checkpoints(finished_run[0], tmp_path / 'kept')
  output = tmp_path / 'predictions.csv'
  train.run(tiny_train_config(tiny_bert_folder, shared_data_dir), kept, 'predict',
            PredictRequest(str(source), str(output), target_accuracy=0.5))
  assert read_csv_rows(output) == from_checkpoint
  section = _results(kept)['predict']
  assert section['trainables'] == {
      'source': 'trainables_file', 'path': os.path.join(kept, export.TRAINABLES_FILENAME),
      'step': _results(finished_run[0])['checkpoint']['best_step']}


@pytest.mark.parametrize('damage,message', [
    ('garbage', 'cannot read trainables file {path}'),
    ('one_member', '{path}: trainables do not fit this backbone'),
])
def test_a_bad_trainables_file_is_refused_in_one_line_naming_it(
    damage, message, finished_run, tiny_bert_folder, shared_data_dir, tmp_path):
  kept = _copy_without_checkpoints(finished_run[0], tmp_path / 'kept')
  path = os.path.join(kept, export.TRAINABLES_FILENAME)
  if damage == 'garbage':
    with open(path, 'wb') as f:
      f.write(b'\x00not a safetensors file')
  else:  # another run's file: one member fewer
    trainables, meta = export.load_trainables(path)
    export.save_trainables(path, jax.tree_util.tree_map(lambda x: x[1:], trainables), meta)
  source = tmp_path / 'new.csv'
  source.write_text('text\nhello\n')
  with pytest.raises(export.CheckpointError) as raised:
    train.run(tiny_train_config(tiny_bert_folder, shared_data_dir), kept, 'predict',
              PredictRequest(str(source), str(tmp_path / 'out.csv')))
  line = user_error_message(raised.value)
  assert line is not None and '\n' not in line and message.format(path=path) in line
  assert not (tmp_path / 'out.csv').exists()


def test_unlabelled_input_works_and_reports_no_accuracy(
    finished_run, tiny_bert_folder, shared_data_dir, tmp_path):
  source = tmp_path / 'new.jsonl'
  source.write_text('{"text": "what a day"}\n{"text": "the train is late again"}\n')
  output = tmp_path / 'out.csv'
  proc = _predict(finished_run, tiny_bert_folder, shared_data_dir, tmp_path,
                  f'--input={source}', f'--output={output}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [r['text'] for r in read_csv_rows(output)] == ['what a day', 'the train is late again']
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
  assert proc.returncode == 2
  assert f'error: --mode=predict: {tmp_path / "never_trained"} holds no finished run' in (
      proc.stderr)
  assert 'Traceback' not in proc.stderr


@pytest.fixture(scope='module')
def image_run(efficientnet_cache, shared_data_dir, tmp_path_factory):
  """A one-step EfficientNet-Lite0 run (32 pixels, M = 2) on an image folder of 60 of
  scikit-learn's digits 0-2, evaluated under two corruptions too (``config.shift``):
  ``(config, workdir, test images, test labels, class names)``."""
  from PIL import Image
  from sklearn.datasets import load_digits
  from configs import fmnist_efficientnet_lite0
  from sve_jax.data import builders
  root = tmp_path_factory.mktemp('image_predict')
  digits = load_digits()
  for label in range(3):
    (root / 'digits' / str(label)).mkdir(parents=True)
    for i, image in enumerate(builders.digits_to_uint8(
        digits.images[digits.target == label][:20])):
      Image.fromarray(image).save(root / 'digits' / str(label) / f'{i}.png')
  config = override(fmnist_efficientnet_lite0.get_config(), {
      'model.path': efficientnet_cache, 'model.image_size': 32, 'data.name': 'image_folder',
      'data.options.folder': str(root / 'digits'), 'data.options.image_size': (32, 32),
      'data.splits.train': 'train', 'data.splits.validation': 'validation',
      'data.splits.test': 'test', 'data.data_dir': shared_data_dir,
      'data.max_train_examples': -1, 'data.max_eval_examples': -1, 'ood.name': '',
      'num_members': 2, 'batch_size': 8, 'eval_batch_size': 8, 'max_steps': 1,
      'steps_per_execution': 1, 'num_epochs': 1, 'shift.enabled': True,
      'shift.corruptions': ('gaussian_noise', 'contrast'), 'shift.severities': (1, 5),
      'shift.max_examples': -1})
  workdir = str(root / 'run')
  train.run(config, workdir, 'train')
  dataset, sources, _ = run_lib.load_data(config, workdir)
  test = [sources['test'][i] for i in range(len(sources['test']))]
  return (config, workdir, [np.asarray(e[dataset.input_key]) for e in test],
          [dataset.label_names[int(e[dataset.label_key])] for e in test], dataset.label_names)


def test_an_image_folder_of_the_test_split_reproduces_the_runs_own_test_scores(image_run,
                                                                               tmp_path):
  from PIL import Image
  config, workdir, images, labels, names = image_run
  folder = tmp_path / 'new_photos'
  folder.mkdir()
  for i, image in enumerate(images):  # PNG is lossless: the very pixels the run scored
    Image.fromarray(image).save(folder / f'{i:03d}.png')
  output = tmp_path / 'predictions.csv'
  train.run(config, workdir, 'predict', PredictRequest(str(folder), str(output)))
  rows = read_csv_rows(output)
  assert [r['path'] for r in rows] == [f'{i:03d}.png' for i in range(len(images))]
  assert list(rows[0]) == ['path', 'prediction', 'confidence', *(f'p_{n}' for n in names),
                           'entropy', 'mutual_information', 'votes', 'review']
  results = _results(workdir)
  scores = prediction_scores(rows, labels, names)
  assert scores == pytest.approx({k: results['test'][k] for k in scores}, abs=1e-4)
  assert results['predict']['rows'] == len(images) and 'accuracy' not in results['predict']


def test_the_image_run_reports_its_scores_under_corruption(image_run):
  config, workdir, images, _, _ = image_run
  results = _results(workdir)
  section = results['shift']
  assert section['num_examples'] == len(images) and section['severities'] == [1, 5]
  assert set(section['corruptions']) == {'gaussian_noise', 'contrast'}
  # The clean subset is the whole test split here: the run's own test scores.
  assert section['clean'] == pytest.approx(
      {**{k: results['test'][k] for k in ('accuracy', 'nll', 'ece')},
       'entropy': section['clean']['entropy']}, abs=1e-5)
  assert set(section['mean']) == {'1', '5'} and section['clean']['entropy'] > 0
  assert os.path.getsize(os.path.join(workdir, 'shift.png')) > 10_000
