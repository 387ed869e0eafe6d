"""Tests for sve_jax.eval.report: the promised results.json schema, the table, the PNG."""
import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from sve_jax.eval import report

PROMISED_KEYS = {
    'method', 'num_members', 'params', 'test', 'test_temperature_scaled', 'members',
    'members_mean', 'diversity', 'validation', 'ensemble_modes', 'ood', 'selective'
}
PARAMS_KEYS = {'backbone', 'trainable_per_member', 'trainable_total', 'overhead'}
SCORE_KEYS = {'accuracy', 'nll', 'brier', 'ece', 'temperature'}
MEMBER_KEYS = {'accuracy', 'nll', 'ece'}
DIVERSITY_KEYS = {'disagreement', 'mutual_information'}
OOD_KEYS = {'dataset', 'auroc_msp', 'auroc_entropy', 'auroc_mi', 'fpr95_mi'}


def _np_softmax(logits):
  exp = np.exp(logits - logits.max(-1, keepdims=True))
  return exp / exp.sum(-1, keepdims=True)


def _split(rng, num_examples, num_members=3, num_classes=4, overconfidence=3.):
  """Members that are right ~70% of the time and over-confident (so T > 1 helps)."""
  labels = rng.integers(0, num_classes, size=num_examples)
  signal = np.eye(num_classes)[labels] * 1.5 + rng.normal(size=(num_examples, num_classes))
  noise = rng.normal(size=(num_members, num_examples, num_classes)) * 0.5
  return ((signal + noise) * overconfidence).astype(np.float32), labels


@pytest.fixture(scope='module')
def results():
  rng = np.random.default_rng(0)
  val_logits, val_labels = _split(rng, 300)
  test_logits, test_labels = _split(rng, 400)
  ood_logits = (rng.normal(size=(3, 200, 4)) * 2.).astype(np.float32)
  built = report.build_results(
      'sve', report.Predictions(val_logits, val_labels),
      report.Predictions(test_logits, test_labels), report.ParamCounts(22_713_216, 55_000),
      ood=report.OodLogits('digits', ood_logits))
  return built, test_logits, test_labels


def test_results_round_trip_with_exactly_the_promised_keys(results, tmp_path):
  built, test_logits, test_labels = results
  path = report.write_results(tmp_path / 'run', built)
  assert path == str(tmp_path / 'run' / 'results.json')
  with open(path) as f:
    loaded = json.load(f)

  assert set(loaded) == PROMISED_KEYS
  assert set(loaded['params']) == PARAMS_KEYS
  assert set(loaded['test']) == SCORE_KEYS
  assert set(loaded['test_temperature_scaled']) == SCORE_KEYS
  assert len(loaded['members']) == 3
  assert all(set(member) == MEMBER_KEYS for member in loaded['members'])
  assert set(loaded['diversity']) == DIVERSITY_KEYS
  assert set(loaded['ood']) == OOD_KEYS
  assert loaded == built  # Nothing lost or altered on the way through JSON.

  assert loaded['method'] == 'sve' and loaded['num_members'] == 3
  assert loaded['params']['trainable_total'] == 3 * 55_000
  assert loaded['params']['overhead'] == pytest.approx(3 * 55_000 / 22_713_216)
  assert loaded['test']['temperature'] == 1.
  # These over-confident members need softening: the fitted temperature is above 1.
  assert loaded['test_temperature_scaled']['temperature'] > 1.
  # Independent check of one number: accuracy of the probability-averaged ensemble.
  ensemble = _np_softmax(test_logits.astype(np.float64)).mean(0)
  assert loaded['test']['accuracy'] == pytest.approx(
      skm.accuracy_score(test_labels, ensemble.argmax(-1)))
  assert loaded['members'][1]['accuracy'] == pytest.approx(
      skm.accuracy_score(test_labels, test_logits[1].argmax(-1)))


def test_results_put_members_mean_and_both_averaging_modes_beside_the_ensemble(results):
  built, test_logits, test_labels = results
  member_probs = _np_softmax(test_logits.astype(np.float64))
  assert built['members_mean']['accuracy'] == pytest.approx(np.mean(
      [skm.accuracy_score(test_labels, logits.argmax(-1)) for logits in test_logits]))
  assert built['members_mean']['nll'] == pytest.approx(np.mean(
      [skm.log_loss(test_labels, p, labels=range(4)) for p in member_probs]), rel=1e-4)
  assert set(built['validation']) == SCORE_KEYS | DIVERSITY_KEYS | {
      f'members_mean_{key}' for key in MEMBER_KEYS}
  assert set(built['ensemble_modes']) == {'probs', 'logits'}
  assert built['ensemble_modes']['probs']['test'] == built['test']
  logits_mode = built['ensemble_modes']['logits']
  assert logits_mode['test']['accuracy'] == pytest.approx(
      skm.accuracy_score(test_labels, test_logits.mean(0).argmax(-1)))
  assert logits_mode['test']['nll'] == pytest.approx(skm.log_loss(
      test_labels, _np_softmax(test_logits.astype(np.float64).mean(0)), labels=range(4)),
      rel=1e-4)
  assert logits_mode['ood']['auroc_mi'] == pytest.approx(built['ood']['auroc_mi'])
  assert 'human_disagreement' not in built  # no agreement given


def test_write_results_converts_arrays_and_writes_nan_as_null(tmp_path):
  path = report.write_results(tmp_path, {
      'scalar': np.float32(0.5), 'count': np.int64(7), 'vector': np.array([1., np.nan]),
      'nested': {'missing': float('nan'), 'infinite': np.inf}, 'pair': (1, 2)})
  with open(path) as f:
    text = f.read()
  assert 'NaN' not in text and 'Infinity' not in text
  assert json.loads(text) == {
      'scalar': 0.5, 'count': 7, 'vector': [1., None],
      'nested': {'missing': None, 'infinite': None}, 'pair': [1, 2]}


def test_summary_table_contains_the_numbers(results):
  built, _, _ = results
  table = report.summary_table(built)
  for section in ('test', 'test_temperature_scaled'):
    for key in SCORE_KEYS:
      assert f'{built[section][key]:.4f}' in table
  for member in built['members']:
    for key in MEMBER_KEYS:
      assert f'{member[key]:.4f}' in table
  for key in DIVERSITY_KEYS:
    assert f"{built['diversity'][key]:.4f}" in table
  for key in OOD_KEYS - {'dataset'}:
    assert f"{built['ood'][key]:.4f}" in table
  assert 'digits' in table and '22,713,216' in table and '165,000' in table
  for name in ('msp', 'entropy', 'mi'):
    assert f"{built['selective'][name]['aurc']:.4f}" in table


def test_selective_section_ranks_the_test_predictions_by_each_score(results):
  built, test_logits, test_labels = results
  member_probs = _np_softmax(test_logits.astype(np.float64))
  ensemble = member_probs.mean(0)
  correct = ensemble.argmax(-1) == test_labels
  # AURC written out: the mean error rate of the k most confident predictions, k = 1..N.
  order = np.argsort(-ensemble.max(-1), kind='stable')
  expected = np.mean(np.cumsum(~correct[order]) / np.arange(1, len(order) + 1))
  assert built['selective']['msp']['aurc'] == pytest.approx(expected, rel=1e-4)
  entropy = -(ensemble * np.log(ensemble)).sum(-1)
  by_entropy = np.argsort(entropy, kind='stable')
  expected = np.mean(np.cumsum(~correct[by_entropy]) / np.arange(1, len(order) + 1))
  assert built['selective']['entropy']['aurc'] == pytest.approx(expected, rel=1e-3)
  at_80 = correct[order[:math.ceil(0.8 * len(order))]].mean()
  assert built['selective']['msp']['accuracy_at_coverage']['0.8'] == pytest.approx(at_80)


def test_summary_table_tolerates_missing_sections(results):
  built, _, _ = results
  partial = {key: built[key] for key in ('method', 'num_members', 'test')}
  table = report.summary_table(partial)
  assert f"{built['test']['nll']:.4f}" in table
  assert 'ood' not in table and 'member 0' not in table


def test_build_results_without_ood_has_no_ood_section():
  rng = np.random.default_rng(1)
  logits, labels = _split(rng, 300)  # The fixture's validation shape: no recompilation.
  split = report.Predictions(logits, labels)
  built = report.build_results('sve', split, split, report.ParamCounts(1000, 10))
  assert set(built) == PROMISED_KEYS - {'ood'}
  assert all(math.isfinite(value) for value in built['test'].values())



def test_several_ood_sets_sit_side_by_side_with_their_feature_scores():
  rng = np.random.default_rng(1)
  val_logits, val_labels = _split(rng, 300)  # the fixture's shapes: no recompilation
  test_logits, test_labels = _split(rng, 400)
  far, near = (rng.normal(size=(3, 200, 4)).astype(np.float32) * s for s in (3., 1.))
  features = {'auroc_mahalanobis': 0.9, 'auroc_feature_disagreement': 0.7}
  built = report.build_results(
      'sve', report.Predictions(val_logits, val_labels),
      report.Predictions(test_logits, test_labels), report.ParamCounts(1000, 10),
      ood=[report.OodLogits('far', far, features), report.OodLogits('near', near)])
  assert built['ood'] == {'dataset': 'far', **built['ood_sets']['far']}
  assert set(built['ood_sets']['far']) == OOD_KEYS - {'dataset'} | set(features)
  assert built['ood_sets']['far']['auroc_mahalanobis'] == 0.9
  # Each set scored as a single OOD set would be: the test split against it.
  alone = report.build_results(
      'sve', report.Predictions(val_logits, val_labels),
      report.Predictions(test_logits, test_labels), report.ParamCounts(1000, 10),
      ood=report.OodLogits('near', near))
  assert 'ood_sets' not in alone
  assert built['ood_sets']['near'] == {k: v for k, v in alone['ood'].items() if k != 'dataset'}
  table = report.summary_table(built)
  assert 'ood (near)' in table and 'auroc_mahalanobis' in table and '0.9000' in table


def test_build_results_adds_a_training_runs_sections_after_the_scores(tmp_path):
  rng = np.random.default_rng(1)
  logits, labels = _split(rng, 300)
  best = report.BestCheckpoint(best_step=40, best_val_accuracy=0.75, checkpoint_bytes=9_000,
                               trainables_file_bytes=4_000, backbone_bytes=88_000)
  split = report.Predictions(logits, labels)
  built = report.build_results(
      'sve', split, split, report.ParamCounts(1000, 10),
      run=report.RunSections(singular_value_change=0.02, checkpoint=best, learning_rate=1e-2,
                             config={'seed': 3, 'optim': {'schedule': 'cosine'}},
                             posterior={'prior_precision': float('inf')}))
  run_keys = ['singular_value_change', 'posterior', 'checkpoint', 'learning_rate', 'config']
  # results.json keeps the scores first and a run's record last, in this order.
  assert list(built)[-5:] == run_keys and set(built) == PROMISED_KEYS - {'ood'} | set(run_keys)
  with open(report.write_results(tmp_path, built)) as f:
    loaded = json.load(f)
  assert loaded['checkpoint'] == {'best_step': 40, 'best_val_accuracy': 0.75,
                                  'checkpoint_bytes': 9_000, 'trainables_file_bytes': 4_000,
                                  'backbone_bytes': 88_000}
  assert loaded['config'] == {'seed': 3, 'optim': {'schedule': 'cosine'}}
  assert (loaded['singular_value_change'], loaded['learning_rate']) == (0.02, 1e-2)
  assert loaded['posterior'] == {'prior_precision': None}  # JSON has no infinity

def test_build_results_carries_the_shift_section_before_the_runs_record():
  rng = np.random.default_rng(1)
  logits, labels = _split(rng, 300)  # the fixture's shapes: no recompilation
  split = report.Predictions(logits, labels)
  section = {'num_examples': 300, 'severities': [1], 'clean': {'accuracy': 0.9},
             'corruptions': {}, 'mean': {}, 'families': {}}
  built = report.build_results('sve', split, split, report.ParamCounts(1000, 10),
                               run=report.RunSections(shift=section, learning_rate=1e-2))
  assert list(built)[-2:] == ['shift', 'learning_rate'] and built['shift'] == section


def test_reliability_diagram_writes_a_png(tmp_path):
  rng = np.random.default_rng(2)
  test_logits, test_labels = _split(rng, 400)
  path = report.reliability_diagram(
      tmp_path / 'reliability.png', test_logits, test_labels, member_index=1, temperature=1.5)
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  assert len(data) > 20_000  # Two panels with bars, text and a legend; a blank figure is ~4 kB.
