"""Tests for sve_jax.eval.metrics against scikit-learn, NumPy formulas and hand-worked examples."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

import sve_jax
from sve_jax.eval import metrics


def _np_softmax(logits, axis=-1):
  shifted = logits - logits.max(axis=axis, keepdims=True)
  exp = np.exp(shifted)
  return exp / exp.sum(axis=axis, keepdims=True)


def _np_entropy(probs):
  return -np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.)), 0.), -1)


def _random_problem(seed, num_members=4, num_examples=300, num_classes=5, scale=2.):
  rng = np.random.default_rng(seed)
  member_logits = rng.normal(size=(num_members, num_examples, num_classes)) * scale
  labels = rng.integers(0, num_classes, size=num_examples)
  return member_logits.astype(np.float32), labels


# ---------------------------------------------------------------------------- ensemble_probs


def test_ensemble_probs_matches_numpy_in_both_modes():
  member_logits, _ = _random_problem(0)
  temperature = 1.7
  np.testing.assert_allclose(
      metrics.ensemble_probs(member_logits, 'logits', temperature),
      _np_softmax(member_logits.mean(0) / temperature), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      metrics.ensemble_probs(member_logits, 'probs', temperature),
      _np_softmax(member_logits / temperature).mean(0), rtol=1e-5, atol=1e-6)


def test_ensemble_probs_rejects_unknown_mode():
  with pytest.raises(ValueError, match='mode'):
    metrics.ensemble_probs(np.zeros((2, 3, 4)), 'median')


# ------------------------------------------------------------------- accuracy, nll, brier


def test_accuracy_and_nll_match_sklearn():
  member_logits, labels = _random_problem(1)
  probs = _np_softmax(member_logits.astype(np.float64)).mean(0)
  assert float(metrics.accuracy(probs, labels)) == pytest.approx(
      skm.accuracy_score(labels, probs.argmax(-1)))
  assert float(metrics.nll(probs, labels)) == pytest.approx(
      skm.log_loss(labels, probs, labels=range(5)), rel=1e-5)


def test_brier_binary_is_twice_sklearn_binary_brier():
  rng = np.random.default_rng(2)
  positive = rng.uniform(size=200)
  labels = rng.integers(0, 2, size=200)
  probs = np.stack([1. - positive, positive], axis=-1)
  # Sum over both classes: (p1 - y)² + ((1 - p1) - (1 - y))² = 2 (p1 - y)².
  assert float(metrics.brier(probs, labels)) == pytest.approx(
      2. * skm.brier_score_loss(labels, positive), rel=1e-5)


def test_brier_multiclass_matches_one_hot_formula_and_sklearn():
  member_logits, labels = _random_problem(3)
  probs = _np_softmax(member_logits.astype(np.float64)).mean(0)
  one_hot = np.eye(5)[labels]
  expected = np.mean(np.sum((probs - one_hot)**2, axis=-1))
  assert float(metrics.brier(probs, labels)) == pytest.approx(expected, rel=1e-5)
  assert float(metrics.brier(probs, labels)) == pytest.approx(
      skm.brier_score_loss(labels, probs, labels=range(5), scale_by_half=False), rel=1e-5)


# --------------------------------------------------------------------------------------- ECE


def test_ece_hand_worked_example():
  # Five examples, 3 classes; label 0 is correct unless stated. Bins are (b/15, (b+1)/15].
  probs = np.array([
      [0.95, 0.03, 0.02],  # conf 0.95 -> bin 14 (0.933, 1.0], correct
      [0.95, 0.03, 0.02],  # conf 0.95 -> bin 14, wrong (label 1)
      [1.00, 0.00, 0.00],  # conf 1.00 -> bin 14 (upper edge is inclusive), correct
      [0.55, 0.25, 0.20],  # conf 0.55 -> bin 8 (0.533, 0.6], correct
      [0.35, 0.33, 0.32],  # conf 0.35 -> bin 5 (0.333, 0.4], correct
  ])
  labels = np.array([0, 1, 0, 0, 0])
  # bin 14: n=3, acc=2/3, conf=(0.95+0.95+1)/3=0.96667 -> 3/5 * 0.3   = 0.18
  # bin  8: n=1, acc=1,   conf=0.55                     -> 1/5 * 0.45  = 0.09
  # bin  5: n=1, acc=1,   conf=0.35                     -> 1/5 * 0.65  = 0.13
  # ECE = 0.18 + 0.09 + 0.13 = 0.40
  assert float(metrics.ece(probs, labels)) == pytest.approx(0.40, abs=1e-6)

  bins = metrics.CalibrationBins(*map(np.asarray, metrics.calibration_bins(probs, labels)))
  expected_counts = np.zeros(15)
  expected_counts[[5, 8, 14]] = [1, 1, 3]
  np.testing.assert_array_equal(bins.counts, expected_counts)
  np.testing.assert_allclose(bins.accuracy[[5, 8, 14]], [1., 1., 2. / 3.], rtol=1e-6)
  np.testing.assert_allclose(bins.confidence[[5, 8, 14]], [0.35, 0.55, 2.9 / 3.], rtol=1e-6)
  np.testing.assert_allclose(bins.edges, np.linspace(0., 1., 16), atol=1e-7)


def test_ece_is_zero_for_perfectly_calibrated_bins():
  # Ten examples at confidence 0.7 of which exactly seven are right: |acc - conf| = 0.
  probs = np.tile([0.7, 0.2, 0.1], (10, 1))
  labels = np.array([0] * 7 + [1] * 3)
  assert float(metrics.ece(probs, labels)) == pytest.approx(0., abs=1e-6)


# --------------------------------------------------------------------- temperature scaling


@pytest.mark.parametrize('true_temperature', [0.5, 2.5])
def test_fit_temperature_recovers_known_temperature(true_temperature):
  # Labels are drawn from softmax(z / T_true), and all members see logits z: the NLL-optimal
  # temperature of the (probability-averaged) ensemble is then T_true up to sampling noise.
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(4000, 6)) * 3.
  cumulative = np.cumsum(_np_softmax(logits / true_temperature), axis=-1)
  labels = np.minimum((rng.uniform(size=(4000, 1)) > cumulative).sum(-1), 5)
  member_logits = np.stack([logits] * 3).astype(np.float32)
  fitted = metrics.fit_temperature(member_logits, labels)
  assert fitted == pytest.approx(true_temperature, rel=0.1)
  # Averaging logits of identical members gives the same prediction.
  assert metrics.fit_temperature(member_logits, labels, mode='logits') == pytest.approx(
      fitted, rel=1e-3)


@pytest.mark.parametrize('seed,mode', [(5, 'probs'), (6, 'logits'), (7, 'probs')])
def test_fit_temperature_never_increases_validation_nll(seed, mode):
  member_logits, labels = _random_problem(seed, scale=float(seed - 4))
  temperature = metrics.fit_temperature(member_logits, labels, mode=mode)
  assert 0.05 <= temperature <= 20.
  nll_fitted = metrics.evaluate(member_logits, labels, temperature=temperature, mode=mode)['nll']
  nll_raw = metrics.evaluate(member_logits, labels, mode=mode)['nll']
  assert nll_fitted <= nll_raw + 1e-6
  # Compare with an independent brute-force grid over T using a NumPy NLL.
  def numpy_nll(t):
    probs = (_np_softmax(member_logits.mean(0) / t) if mode == 'logits'
             else _np_softmax(member_logits / t).mean(0))
    return -np.mean(np.log(probs[np.arange(len(labels)), labels]))
  best_on_grid = min(numpy_nll(t) for t in np.geomspace(0.05, 20., 400))
  assert numpy_nll(temperature) <= best_on_grid + 1e-4


# ---------------------------------------------------------------- uncertainty and diversity


def test_mutual_information_zero_for_equal_members_positive_otherwise():
  member_logits, _ = _random_problem(8, num_members=1)
  equal_members = np.repeat(member_logits, 4, axis=0)
  mi_equal = metrics.mutual_information(metrics.member_probs(equal_members))
  np.testing.assert_allclose(mi_equal, 0., atol=1e-5)

  different, _ = _random_problem(9)
  mi = np.asarray(metrics.mutual_information(metrics.member_probs(different)))
  member_p = _np_softmax(different.astype(np.float64))
  expected = _np_entropy(member_p.mean(0)) - _np_entropy(member_p).mean(0)
  np.testing.assert_allclose(mi, expected, atol=1e-5)
  assert np.all(mi >= 0.) and np.mean(mi) > 0.01


def test_entropy_and_max_prob_match_numpy():
  member_logits, _ = _random_problem(10)
  probs = np.asarray(metrics.ensemble_probs(member_logits), np.float64)
  np.testing.assert_allclose(metrics.entropy(probs), _np_entropy(probs), rtol=1e-5)
  np.testing.assert_allclose(metrics.entropy(np.array([[1., 0., 0.], [.5, .5, 0.]])),
                             [0., np.log(2.)], atol=1e-7)
  np.testing.assert_allclose(metrics.max_prob(probs), probs.max(-1), rtol=1e-6)


def test_disagreement_hand_checked():
  predictions = np.array([
      [0, 1, 2, 0],
      [0, 1, 2, 1],
      [1, 1, 2, 1],
  ])
  member_logits = 5. * np.eye(3)[predictions]  # (3 members, 4 examples, 3 classes)
  # Pairs (0,1): differ on example 3 -> 1/4; (0,2): examples 0 and 3 -> 2/4;
  # (1,2): example 0 -> 1/4. Mean over the three pairs = (0.25 + 0.5 + 0.25) / 3 = 1/3.
  assert float(metrics.disagreement(member_logits)) == pytest.approx(1. / 3.)
  assert metrics.diversity(member_logits)['disagreement'] == pytest.approx(1. / 3.)
  assert float(metrics.disagreement(member_logits[:1])) == 0.


def test_member_metrics_match_sklearn_per_member():
  member_logits, labels = _random_problem(11, num_members=3)
  per_member = metrics.member_metrics(member_logits, labels)
  assert len(per_member) == 3
  for logits, result in zip(member_logits, per_member):
    assert set(result) == {'accuracy', 'nll', 'ece'}
    probs = _np_softmax(logits.astype(np.float64))
    assert result['accuracy'] == pytest.approx(skm.accuracy_score(labels, probs.argmax(-1)))
    assert result['nll'] == pytest.approx(skm.log_loss(labels, probs, labels=range(5)), rel=1e-5)


def test_evaluate_returns_python_floats_matching_sklearn():
  member_logits, labels = _random_problem(12)
  result = metrics.evaluate(member_logits, labels, temperature=2.)
  assert set(result) == {'accuracy', 'nll', 'brier', 'ece', 'temperature'}
  assert all(type(value) is float for value in result.values())
  probs = _np_softmax(member_logits.astype(np.float64) / 2.).mean(0)
  assert result['temperature'] == 2.
  assert result['accuracy'] == pytest.approx(skm.accuracy_score(labels, probs.argmax(-1)))
  assert result['nll'] == pytest.approx(skm.log_loss(labels, probs, labels=range(5)), rel=1e-5)


# ----------------------------------------------------------------------------------------- OOD


@pytest.mark.parametrize('decimals', [None, 1])
def test_auroc_matches_sklearn_including_ties(decimals):
  rng = np.random.default_rng(13)
  scores_in = rng.normal(size=137)
  scores_out = rng.normal(loc=0.7, size=80)
  if decimals is not None:  # Coarse rounding creates many ties across and within groups.
    scores_in, scores_out = np.round(scores_in, decimals), np.round(scores_out, decimals)
  y = np.r_[np.zeros(137), np.ones(80)]
  expected = skm.roc_auc_score(y, np.r_[scores_in, scores_out])
  assert metrics.auroc(scores_in, scores_out) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize('num_out,decimals', [(20, None), (20, 1), (333, None), (333, 1)])
def test_fpr_at_tpr_matches_sklearn_roc_curve(num_out, decimals):
  # Convention: the smallest FPR among ROC points whose TPR >= 0.95 (OOD = positive).
  # num_out = 20 makes TPR = 19/20 = 0.95 reachable exactly.
  rng = np.random.default_rng(14)
  scores_in = rng.normal(size=250)
  scores_out = rng.normal(loc=1., size=num_out)
  if decimals is not None:
    scores_in, scores_out = np.round(scores_in, decimals), np.round(scores_out, decimals)
  y = np.r_[np.zeros(250), np.ones(num_out)]
  fpr, tpr, _ = skm.roc_curve(y, np.r_[scores_in, scores_out], drop_intermediate=False)
  expected = fpr[tpr >= 0.95].min()
  assert metrics.fpr_at_tpr(scores_in, scores_out, 0.95) == pytest.approx(expected, abs=1e-12)


def test_ood_metrics_match_sklearn_on_numpy_scores():
  rng = np.random.default_rng(15)
  # In-distribution: confident members that mostly agree; OOD: flatter, disagreeing members.
  shared = rng.normal(size=(1, 200, 4)) * 4.
  logits_in = (shared + rng.normal(size=(3, 200, 4)) * 0.5).astype(np.float32)
  logits_out = (rng.normal(size=(3, 150, 4)) * 1.5).astype(np.float32)
  result = metrics.ood_metrics(logits_in, logits_out)
  assert set(result) == {f'{kind}_{score}' for kind in ('auroc', 'fpr95')
                         for score in ('msp', 'entropy', 'mi')}

  def numpy_scores(member_logits):
    member_p = _np_softmax(member_logits.astype(np.float64))
    mean_p = member_p.mean(0)
    return {'msp': -mean_p.max(-1), 'entropy': _np_entropy(mean_p),
            'mi': _np_entropy(mean_p) - _np_entropy(member_p).mean(0)}

  scores_in, scores_out = numpy_scores(logits_in), numpy_scores(logits_out)
  y = np.r_[np.zeros(200), np.ones(150)]
  for name in ('msp', 'entropy', 'mi'):
    pooled = np.r_[scores_in[name], scores_out[name]]
    assert result[f'auroc_{name}'] == pytest.approx(skm.roc_auc_score(y, pooled), abs=2e-3)
    fpr, tpr, _ = skm.roc_curve(y, pooled, drop_intermediate=False)
    assert result[f'fpr95_{name}'] == pytest.approx(fpr[tpr >= 0.95].min(), abs=0.02)
  assert result['auroc_mi'] > 0.8  # The sign convention puts OOD above in-distribution.


def test_auroc_rejects_empty_inputs():
  with pytest.raises(ValueError):
    metrics.auroc(np.array([]), np.array([1.]))


def _average_ranks(values):
  """1-based ranks; tied values share the mean of the ranks they span."""
  order = np.argsort(values, kind='stable')
  ranks = np.empty(len(values))
  ranks[order] = np.arange(1, len(values) + 1)
  _, group = np.unique(values, return_inverse=True)
  sums = np.bincount(group, weights=ranks)
  return (sums / np.bincount(group))[group]


def test_disagreement_correlation_is_spearman_with_one_minus_agreement():
  member_logits, _ = _random_problem(16, num_examples=200)
  rng = np.random.default_rng(16)
  # Agreement in coarse steps (many ties, as in the tweet corpus); a few unknown.
  agreement = rng.choice([0.34, 0.67, 1.], size=200)
  agreement[[3, 50, 199]] = np.nan
  result = metrics.disagreement_correlation(member_logits, agreement)
  assert result['num_examples'] == 197
  member_p = _np_softmax(member_logits.astype(np.float64))
  mean_p = member_p.mean(0)
  uncertainties = {'entropy': _np_entropy(mean_p),
                   'mutual_information': _np_entropy(mean_p) - _np_entropy(member_p).mean(0),
                   'one_minus_max_prob': 1. - mean_p.max(-1)}
  known = np.isfinite(agreement)
  human = _average_ranks(1. - agreement[known])
  for name, values in uncertainties.items():
    expected = np.corrcoef(_average_ranks(values[known]), human)[0, 1]
    assert result[name] == pytest.approx(expected, abs=1e-4), name
  # Uncertainty that follows the disagreement exactly correlates perfectly.
  top = np.where(known, 0.5 + agreement / 2., 1.)  # top class probability in [0.67, 1]
  tracking = np.stack([np.log(np.stack([top, 1. - top + 1e-3], -1))] * 2)
  assert metrics.disagreement_correlation(tracking, agreement)['entropy'] == pytest.approx(1.)
  # One member has no mutual information to rank.
  assert math.isnan(metrics.disagreement_correlation(member_logits[:1], agreement)[
      'mutual_information'])


def test_singular_value_change_is_the_mean_relative_distance_from_pretrained():
  rng = np.random.default_rng(0)
  params = {'a': {'kernel': jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
                  'bias': jnp.zeros((4,))},
            'b': {'kernel': jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)}}
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(1), frozen, s, 3, noise_std=0.2)
  trainables = {**trainables, 'a': {**trainables['a'], 'bias': trainables['a']['bias'] + 9.}}
  expected = np.mean([np.linalg.norm(np.asarray(trainables[k]['kernel'][m]) - s[k]['kernel'])
                      / np.linalg.norm(s[k]['kernel']) for k in 'ab' for m in range(3)])
  assert metrics.singular_value_change(frozen, s, trainables) == pytest.approx(
      expected, rel=1e-5)  # the biases, moved by 9, are not counted
  assert metrics.singular_value_change(
      frozen, s, jax.tree_util.tree_map(lambda x: jnp.stack([x] * 2), s)) == 0.
