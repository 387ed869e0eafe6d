"""Selective prediction: risk–coverage, AURC and thresholds against brute-force values."""
import numpy as np
import pytest

from sve_jax.eval import selective


def _brute_force_risk_at_k(uncertainty, correct):
  """risk@k of answering the k most certain examples, k = 1..N (no ties)."""
  order = np.argsort(uncertainty)
  return np.array([np.mean(~correct[order[:k]]) for k in range(1, len(order) + 1)])


def test_aurc_without_ties_is_the_mean_risk_at_every_k():
  rng = np.random.default_rng(0)
  uncertainty = rng.normal(size=200)
  correct = rng.random(200) < 0.7
  curve = selective.risk_coverage(uncertainty, correct)
  expected = _brute_force_risk_at_k(uncertainty, correct)
  np.testing.assert_allclose(curve.risk, expected)
  assert selective.aurc(curve) == pytest.approx(expected.mean())


def test_a_perfect_ranking_has_the_smallest_area_and_a_reversed_one_the_largest():
  correct = np.array([True] * 6 + [False] * 4)
  good = selective.aurc(selective.risk_coverage(np.arange(10.), correct))
  bad = selective.aurc(selective.risk_coverage(-np.arange(10.), correct))
  # Written out: errors only enter at k = 7..10 (good) or k = 1..4 (bad).
  assert good == pytest.approx(np.mean([0] * 6 + [1 / 7, 2 / 8, 3 / 9, 4 / 10]))
  assert bad == pytest.approx(np.mean([1, 1, 1, 1, 4 / 5, 4 / 6, 4 / 7, 4 / 8, 4 / 9, 4 / 10]))


def test_tied_scores_enter_together_whatever_their_order():
  uncertainty = np.array([0.1, 0.5, 0.5, 0.5, 0.9])
  correct = np.array([True, True, False, False, True])
  curve = selective.risk_coverage(uncertainty, correct)
  np.testing.assert_allclose(curve.coverage, [0.2, 0.8, 1.0])
  np.testing.assert_allclose(curve.risk, [0., 2 / 4, 2 / 5])
  permuted = selective.risk_coverage(uncertainty[[0, 3, 2, 1, 4]], correct[[0, 3, 2, 1, 4]])
  np.testing.assert_allclose(permuted.risk, curve.risk)
  assert selective.aurc(curve) == pytest.approx(0.2 * 0 + 0.6 * 0.5 + 0.2 * 0.4)


def test_accuracy_at_coverage_and_thresholds_match_a_search_over_every_threshold():
  rng = np.random.default_rng(1)
  uncertainty = np.round(rng.random(300), 2)       # many ties
  correct = rng.random(300) < 1 - uncertainty      # more certain, more often right
  curve = selective.risk_coverage(uncertainty, correct)
  candidates = np.unique(uncertainty)
  answered = [uncertainty <= t for t in candidates]
  coverages = np.array([a.mean() for a in answered])
  accuracies = np.array([correct[a].mean() for a in answered])
  for target in (0.5, 0.8, 0.95, 1.0):
    first = np.flatnonzero(coverages >= target)[0]
    assert selective.accuracy_at_coverage(curve, target) == pytest.approx(accuracies[first])
    assert selective.threshold_for_coverage(curve, target) == candidates[first]
  for target in (0.7, 0.9):
    best = candidates[np.flatnonzero(accuracies >= target)[-1]]
    assert selective.threshold_for_accuracy(curve, target) == best
  assert selective.threshold_for_accuracy(
      selective.risk_coverage([0.1, 0.2], [False, False]), 0.9) == -np.inf


def test_selective_section_reports_each_score_and_a_bounded_curve():
  rng = np.random.default_rng(2)
  correct = rng.random(1000) < 0.8
  section = selective.selective_section(
      {'msp': rng.random(1000), 'entropy': rng.random(1000)}, correct, num_points=11)
  assert set(section) == {'msp', 'entropy'}
  for entry in section.values():
    assert set(entry['accuracy_at_coverage']) == {'0.8', '0.9', '0.95'}
    assert len(entry['curve']['coverage']) == 11
    assert entry['curve']['coverage'][-1] == 1.0
    assert entry['curve']['risk'][-1] == pytest.approx(1 - correct.mean(), abs=1e-6)


@pytest.mark.parametrize('bad', [([], []), ([0.1, 0.2], [True]), ([np.nan], [True])])
def test_bad_inputs_are_refused(bad):
  with pytest.raises(ValueError):
    selective.risk_coverage(*bad)
