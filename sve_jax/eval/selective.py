"""Selective prediction: answer when sure, defer the rest, and what that buys.

A model that abstains on its least certain examples trades *coverage* (the fraction it
answers) for *risk* (its error rate on what it answers). Ranking examples by an uncertainty
score ``u`` (lower = more certain), the answered set at threshold ``t`` is ``{u ≤ t}``:

* :func:`risk_coverage`: the curve over every distinct threshold (tied scores enter
  together, so the curve does not depend on how ties are ordered);
* :func:`aurc`: the area under it, the step integral ``Σ risk(t_i) · Δcoverage(t_i)``; with
  no ties it is the usual ``(1/N) Σ_k risk@k`` (Geifman et al., 2018). Lower is better;
* :func:`accuracy_at_coverage`: accuracy of the answered set at the smallest threshold that
  covers at least a given fraction;
* :func:`threshold_for_accuracy` / :func:`threshold_for_coverage`: the threshold a deployment
  uses, chosen on validation data.

:func:`selective_section` is the ``selective`` section of ``results.json``: these numbers for
each of max probability, predictive entropy and mutual information.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

#: The coverages ``results.json`` reports accuracy at.
REPORTED_COVERAGES = (0.8, 0.9, 0.95)
#: Points kept of each stored risk–coverage curve (evenly spaced in coverage).
CURVE_POINTS = 101


class RiskCoverage(NamedTuple):
  """A risk–coverage curve, one point per distinct threshold, by growing coverage.

  Attributes:
    thresholds: ``(K,)`` the uncertainty thresholds, ascending; point ``i`` answers every
      example with ``u ≤ thresholds[i]``.
    coverage: ``(K,)`` the fraction answered, ascending, ending at 1.
    risk: ``(K,)`` the error rate among the answered examples.
  """
  thresholds: np.ndarray
  coverage: np.ndarray
  risk: np.ndarray


def risk_coverage(uncertainty: ArrayLike, correct: ArrayLike) -> RiskCoverage:
  """The risk–coverage curve of abstaining on the most uncertain examples first.

  Args:
    uncertainty: ``(N,)`` per-example uncertainty, lower = more certain (e.g. ``1 − max
      prob``, entropy, mutual information).
    correct: ``(N,)`` whether each prediction is right.

  Raises:
    ValueError: empty or mismatched inputs, or a non-finite uncertainty.
  """
  uncertainty = np.asarray(uncertainty, np.float64).reshape(-1)
  correct = np.asarray(correct, bool).reshape(-1)
  if uncertainty.size == 0 or uncertainty.shape != correct.shape:
    raise ValueError(f'risk_coverage needs equal, non-empty inputs; got {uncertainty.shape} '
                     f'uncertainties and {correct.shape} outcomes')
  if not np.all(np.isfinite(uncertainty)):
    raise ValueError('risk_coverage: uncertainties must be finite')
  order = np.argsort(uncertainty, kind='stable')
  sorted_u = uncertainty[order]
  errors = np.cumsum(~correct[order])
  # The last index of each run of equal scores: ties are answered together.
  last = np.flatnonzero(np.append(sorted_u[1:] != sorted_u[:-1], True))
  answered = last + 1
  return RiskCoverage(thresholds=sorted_u[last], coverage=answered / uncertainty.size,
                      risk=errors[last] / answered)


def aurc(curve: RiskCoverage) -> float:
  """Area under the risk–coverage curve, ``Σ_i risk_i · (coverage_i − coverage_{i−1})``."""
  widths = np.diff(curve.coverage, prepend=0.)
  return float(np.sum(curve.risk * widths))


def accuracy_at_coverage(curve: RiskCoverage, coverage: float) -> float:
  """Accuracy of the answered set at the first threshold that covers ≥ ``coverage``."""
  if not 0 < coverage <= 1:
    raise ValueError(f'coverage must be in (0, 1]; got {coverage}')
  # A small tolerance so that 0.8 of 10 examples (8.000000000000002) is 8.
  index = int(np.searchsorted(curve.coverage, coverage - 1e-12))
  return float(1. - curve.risk[index])


def threshold_for_coverage(curve: RiskCoverage, coverage: float) -> float:
  """The smallest uncertainty threshold that answers at least ``coverage`` of the examples."""
  if not 0 < coverage <= 1:
    raise ValueError(f'target coverage must be in (0, 1]; got {coverage}')
  return float(curve.thresholds[int(np.searchsorted(curve.coverage, coverage - 1e-12))])


def threshold_for_accuracy(curve: RiskCoverage, accuracy: float) -> float:
  """The largest threshold whose answered set is at least ``accuracy`` accurate.

  Returns ``-inf`` (answer nothing) when no threshold reaches the target.
  """
  if not 0 < accuracy <= 1:
    raise ValueError(f'target accuracy must be in (0, 1]; got {accuracy}')
  reaching = np.flatnonzero(1. - curve.risk >= accuracy - 1e-12)
  return float(curve.thresholds[reaching[-1]]) if reaching.size else -math.inf


def _resampled(curve: RiskCoverage, num_points: int) -> dict[str, list[float]]:
  """The curve at ``num_points`` evenly spaced coverages (risk of the first point ≥ each)."""
  grid = np.linspace(curve.coverage[0], 1., num_points)
  index = np.minimum(np.searchsorted(curve.coverage, grid - 1e-12), curve.coverage.size - 1)
  return {'coverage': [round(float(c), 6) for c in curve.coverage[index]],
          'risk': [round(float(r), 6) for r in curve.risk[index]]}


def selective_section(uncertainties: dict[str, ArrayLike], correct: ArrayLike,
                      num_points: int = CURVE_POINTS) -> dict[str, Any]:
  """``results.json``'s ``selective`` section: for each score, AURC, accuracy at coverage.

  Args:
    uncertainties: ``{score name: (N,) uncertainty}``, lower = more certain.
    correct: ``(N,)`` whether the ensemble's prediction is right.
    num_points: points kept of each curve.

  Returns:
    ``{name: {'aurc', 'accuracy_at_coverage': {'0.8': .., '0.9': .., '0.95': ..},
    'curve': {'coverage': [...], 'risk': [...]}}}``.
  """
  section = {}
  for name, values in uncertainties.items():
    curve = risk_coverage(values, correct)
    section[name] = {
        'aurc': aurc(curve),
        'accuracy_at_coverage': {str(c): accuracy_at_coverage(curve, c)
                                 for c in REPORTED_COVERAGES},
        'curve': _resampled(curve, num_points)}
  return section
