"""Predict mode's parts: the review threshold, the output columns, the all-or-nothing file."""
import csv
import os

import numpy as np
import pytest
import scipy.special
import scipy.stats

from sve_jax.train import predict

CLASSES = ('negative', 'neutral', 'positive')


def _logits(n=200, members=3, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n)
  logits = rng.normal(size=(members, n, 3)) + 1.5 * np.eye(3)[labels]
  return logits, labels


def test_columns_hold_the_mean_probability_its_entropy_mi_and_each_members_vote():
  logits, _ = _logits(n=5)
  columns = predict.prediction_columns(logits, CLASSES, mode='probs', threshold=0.6)
  member_probs = scipy.special.softmax(logits, axis=-1)
  probs = member_probs.mean(0)
  np.testing.assert_allclose(columns['p_neutral'], probs[:, 1], rtol=1e-5)
  np.testing.assert_allclose(columns['confidence'], probs.max(-1), rtol=1e-5)
  entropy = scipy.stats.entropy(probs, axis=-1)
  np.testing.assert_allclose(columns['entropy'], entropy, rtol=1e-4, atol=1e-6)
  expected_mi = entropy - scipy.stats.entropy(member_probs, axis=-1).mean(0)
  np.testing.assert_allclose(columns['mutual_information'], expected_mi, atol=1e-5)
  assert columns['prediction'] == [CLASSES[i] for i in probs.argmax(-1)]
  assert columns['votes'][0] == '|'.join(CLASSES[m] for m in logits[:, 0].argmax(-1))
  assert columns['review'] == list(probs.max(-1) < 0.6)


def test_a_single_models_mutual_information_is_zero():
  logits, _ = _logits(n=8, members=1)
  columns = predict.prediction_columns(logits, CLASSES, mode='probs', threshold=0.)
  np.testing.assert_allclose(columns['mutual_information'], 0., atol=1e-6)


def test_threshold_for_a_target_accuracy_is_the_lowest_confidence_that_reaches_it():
  logits, labels = _logits()
  chosen = predict.choose_threshold(logits, labels, mode='probs', target_accuracy=0.8)
  probs = scipy.special.softmax(logits, axis=-1).mean(0)
  confidence, correct = probs.max(-1), probs.argmax(-1) == labels
  # Brute force: every candidate threshold, the lowest whose kept rows are ≥ 80% right.
  reaching = [t for t in np.unique(confidence) if correct[confidence >= t].mean() >= 0.8]
  assert chosen.confidence == pytest.approx(min(reaching), rel=1e-5)
  kept = confidence >= min(reaching)   # float64 here, float32 in the model: compare by value
  assert chosen.validation_accuracy == pytest.approx(correct[kept].mean())
  assert chosen.validation_coverage == pytest.approx(kept.mean())


def test_threshold_for_a_target_coverage_keeps_at_least_that_fraction():
  logits, labels = _logits()
  chosen = predict.choose_threshold(logits, labels, mode='probs', target_coverage=0.75)
  confidence = scipy.special.softmax(logits, axis=-1).mean(0).max(-1)
  assert chosen.validation_coverage >= 0.75
  # The next higher threshold would keep fewer than 75%.
  assert (confidence > chosen.confidence + 1e-6).mean() < 0.75


@pytest.mark.parametrize('targets', [{}, {'target_accuracy': 0.9, 'target_coverage': 0.8},
                                     {'target_coverage': 1.5}])
def test_threshold_needs_exactly_one_valid_target(targets):
  logits, labels = _logits(n=10)
  with pytest.raises(predict.PredictError):
    predict.choose_threshold(logits, labels, mode='probs', **targets)


def test_output_appears_whole_or_not_at_all(tmp_path):
  output = str(tmp_path / 'out.csv')
  rows = [{'text': 'a, "quoted"', 'id': '1', '_line': 2}, {'text': 'b', 'id': '2', '_line': 3}]
  columns = {'prediction': ['x', 'y'], 'confidence': [0.5, 0.25]}
  assert predict.write_predictions(output, [(rows, columns)]) == 2
  with open(output, newline='') as f:
    assert list(csv.DictReader(f)) == [
        {'text': 'a, "quoted"', 'id': '1', 'prediction': 'x', 'confidence': '0.5'},
        {'text': 'b', 'id': '2', 'prediction': 'y', 'confidence': '0.25'}]

  def failing():
    yield rows, columns
    raise predict.PredictError('in.csv:9: broken')

  with pytest.raises(predict.PredictError):
    predict.write_predictions(str(tmp_path / 'new.csv'), failing())
  assert sorted(os.listdir(tmp_path)) == ['out.csv']


@pytest.mark.parametrize('request_kw,message', [
    ({'input': 'missing.csv'}, 'does not exist'),
    ({'output': ''}, '--output is required'),
    ({'output': 'IN'}, 'would overwrite --input'),
    ({'output': '/no/such/folder/out.csv'}, 'does not exist'),
    ({'target_accuracy': 0.9, 'target_coverage': 0.8}, 'not both'),
    ({'target_coverage': 0.}, 'must be in (0, 1]'),
])
def test_a_bad_request_is_refused_before_any_work(request_kw, message, tmp_path):
  source = tmp_path / 'in.csv'
  source.write_text('text\nhello\n')
  kw = {'input': str(source), 'output': str(tmp_path / 'out.csv'), **request_kw}
  if kw['output'] == 'IN':
    kw['output'] = str(source)
  with pytest.raises(predict.PredictError, match=message.replace('(', r'\(').replace(
      ']', r'\]').replace('[', r'\[').replace(')', r'\)')):
    predict.PredictRequest(**kw).check()


def test_no_target_means_the_default_coverage():
  request = predict.PredictRequest('in.csv', 'out.csv')
  assert request.targets() == {'target_coverage': predict.DEFAULT_TARGET_COVERAGE}


@pytest.mark.parametrize('name,content,message', [
    ('no_text.csv', 'tweet\nhi\n', r"no_text\.csv:2: no column 'text'"),
    ('blank.jsonl', '{"text": " "}\n', r"blank\.jsonl:1: empty value in column 'text'"),
    ('extra.csv', 'text\n"a",b\n', r'extra\.csv:2: 2 fields, but the header has 1'),
    ('empty.tsv', '', r'empty\.tsv: the file is empty'),
    ('notes.xlsx', 'x', r"expected a folder of images or a table file"),
])
def test_hostile_inputs_name_the_file_and_line(name, content, message, tmp_path):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(ValueError, match=message):
    predict.check_input(predict.PredictRequest(str(path), str(tmp_path / 'o.csv')),
                        predict.InputColumns('text'))


def test_rows_stream_in_chunks_in_file_order_with_every_column(tmp_path):
  path = tmp_path / 'many.csv'
  path.write_text('id,text\n' + ''.join(f'{i},row {i}\n' for i in range(7)))
  chunks = list(predict.read_chunks(str(path), 'text', chunk_rows=3))
  assert [len(c) for c in chunks] == [3, 3, 1]
  assert chunks[2][0] == {'id': '6', 'text': 'row 6', '_line': 8}
