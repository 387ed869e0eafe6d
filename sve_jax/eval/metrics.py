"""Evaluation metrics for ensembles: calibration, temperature scaling, uncertainty, OOD.

Conventions shared by every function here:

* ``member_logits`` has shape ``(M, N, C)``: M members, N examples, C classes.
* ``probs`` has shape ``(N, C)`` and rows that sum to one; ``labels`` are integers ``(N,)``.
* The array functions are pure ``jax.numpy`` and can be jitted by the caller (``mode`` and
  ``num_bins`` are static). :func:`auroc` and :func:`fpr_at_tpr` are host-side NumPy (they
  sort and deduplicate), as are the dict-returning helpers :func:`evaluate`,
  :func:`member_metrics`, :func:`diversity` and :func:`ood_metrics`, which return floats.
* OOD sign convention: the positive class is OOD and a *higher* score means *more* OOD.
  Max softmax probability is therefore negated (see :func:`uncertainty_scores`).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from sve_jax import factorize
from sve_jax import tree as tree_lib
from sve_jax.ensemble import check_ensemble_mode
from sve_jax.ensemble import ENSEMBLE_MODES
from sve_jax.ensemble import ensemble_probs
from sve_jax.ensemble import member_probs

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

NUM_ECE_BINS = 15
NLL_EPS = 1e-12
TEMPERATURE_BOUNDS = (0.05, 20.)


# --------------------------------------------------------------------------------------------
# Proper scores and calibration of one predictive distribution (N, C).
# --------------------------------------------------------------------------------------------


def accuracy(probs: ArrayLike, labels: ArrayLike) -> Array:
  """Fraction of examples whose argmax class equals the label (ties: lowest index)."""
  return jnp.mean(jnp.argmax(probs, axis=-1) == labels)


def nll(probs: ArrayLike, labels: ArrayLike, eps: float = NLL_EPS) -> Array:
  """Mean negative log-likelihood of the true class, ``-(1/N) Σ_n log max(p_{n,y_n}, eps)``.

  Probabilities are clipped from below at ``eps`` (default 1e-12, i.e. a per-example cap of
  about 27.6 nats) so that an underflowed probability gives a finite loss. Rows are not
  renormalised.
  """
  true_class_probs = jnp.take_along_axis(
      jnp.asarray(probs), jnp.asarray(labels)[:, None], axis=-1)[:, 0]
  return -jnp.mean(jnp.log(jnp.clip(true_class_probs, eps, 1.)))


def brier(probs: ArrayLike, labels: ArrayLike) -> Array:
  """Multi-class Brier score ``(1/N) Σ_n Σ_c (p_{n,c} − 1[c = y_n])²``, in ``[0, 2]``.

  This is the sum over classes (not the mean over classes). For two classes it is twice the
  usual binary Brier score ``(1/N) Σ_n (p_{n,1} − y_n)²`` (scikit-learn's
  ``brier_score_loss`` on the positive-class probability), and it equals scikit-learn's
  multi-class ``brier_score_loss(labels, probs, scale_by_half=False)``.
  """
  probs = jnp.asarray(probs)
  one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
  return jnp.mean(jnp.sum(jnp.square(probs - one_hot), axis=-1))


class CalibrationBins(NamedTuple):
  """Per-bin statistics of a reliability diagram with equal-width confidence bins.

  Attributes:
    edges: ``(B + 1,)`` bin edges ``0, 1/B, ..., 1``.
    counts: ``(B,)`` number of examples per bin.
    accuracy: ``(B,)`` mean correctness per bin; 0 for empty bins.
    confidence: ``(B,)`` mean confidence per bin; 0 for empty bins.
  """
  edges: Array
  counts: Array
  accuracy: Array
  confidence: Array


def calibration_bins(probs: ArrayLike,
                     labels: ArrayLike,
                     num_bins: int = NUM_ECE_BINS) -> CalibrationBins:
  """Bins examples by confidence ``max_c p_{n,c}`` into ``num_bins`` equal-width bins.

  Bin b (0-based) is ``(b/B, (b+1)/B]``, and the first bin also holds confidence 0, i.e. the
  bin index is ``clip(ceil(B · conf) − 1, 0, B − 1)``. An example is correct when its argmax
  class equals its label.

  Args:
    probs: ``(N, C)``.
    labels: ``(N,)`` integers.
    num_bins: B; static under ``jax.jit``.

  Returns:
    A :class:`CalibrationBins`.
  """
  probs = jnp.asarray(probs)
  confidence = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(confidence.dtype)
  bin_index = jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
  counts = jax.ops.segment_sum(jnp.ones_like(confidence), bin_index, num_segments=num_bins)
  correct_sums = jax.ops.segment_sum(correct, bin_index, num_segments=num_bins)
  confidence_sums = jax.ops.segment_sum(confidence, bin_index, num_segments=num_bins)
  safe_counts = jnp.maximum(counts, 1.)  # Empty bins report 0, not NaN.
  return CalibrationBins(
      edges=jnp.linspace(0., 1., num_bins + 1),
      counts=counts,
      accuracy=correct_sums / safe_counts,
      confidence=confidence_sums / safe_counts)


def ece(probs: ArrayLike, labels: ArrayLike, num_bins: int = NUM_ECE_BINS) -> Array:
  """Expected calibration error ``Σ_b (n_b / N) |acc_b − conf_b|`` over equal-width bins.

  Bins and per-bin accuracy/confidence are those of :func:`calibration_bins` (15 bins by
  default, as in the paper).
  """
  bins = calibration_bins(probs, labels, num_bins)
  weights = bins.counts / jnp.sum(bins.counts)
  return jnp.sum(weights * jnp.abs(bins.accuracy - bins.confidence))


# --------------------------------------------------------------------------------------------
# Uncertainty scores and diversity.
# --------------------------------------------------------------------------------------------


def max_prob(probs: ArrayLike) -> Array:
  """Max softmax probability (confidence) ``max_c p_{n,c}``; shape ``probs.shape[:-1]``."""
  return jnp.max(probs, axis=-1)


def entropy(probs: ArrayLike) -> Array:
  """Shannon entropy in nats ``−Σ_c p_c log p_c`` over the last axis, with ``0 log 0 = 0``."""
  return -jnp.sum(jax.scipy.special.xlogy(probs, probs), axis=-1)


def expected_entropy(member_probabilities: ArrayLike) -> Array:
  """Mean of the members' entropies ``(1/M) Σ_m H(p_m)``; ``(M, N, C) → (N,)``."""
  return jnp.mean(entropy(member_probabilities), axis=0)


def mutual_information(member_probabilities: ArrayLike) -> Array:
  """Mutual information (BALD) ``H((1/M) Σ_m p_m) − (1/M) Σ_m H(p_m)``; ``(M, N, C) → (N,)``.

  Always computed on probability-averaged members, where Jensen's inequality makes it
  ``≥ 0`` (tiny negative rounding errors are clamped to 0). It is 0 exactly when all members
  agree on an example's distribution.
  """
  member_probabilities = jnp.asarray(member_probabilities)
  total = entropy(jnp.mean(member_probabilities, axis=0))
  return jnp.maximum(total - expected_entropy(member_probabilities), 0.)


def disagreement(member_logits: ArrayLike) -> Array:
  """Pairwise disagreement of members' predicted classes.

  ``(2 / (M (M − 1))) Σ_{m < m'} (1/N) Σ_n 1[argmax z_{m,n} ≠ argmax z_{m',n}]``: the fraction
  of examples on which two members' argmax classes differ, averaged over all member pairs.
  Defined as 0 for a single member.
  """
  predictions = jnp.argmax(member_logits, axis=-1)  # (M, N)
  num_members = predictions.shape[0]
  if num_members < 2:
    return jnp.zeros(())
  differ = predictions[:, None, :] != predictions[None, :, :]  # (M, M, N), diagonal False.
  # Each unordered pair is counted twice over the off-diagonal entries.
  return jnp.sum(differ) / (num_members * (num_members - 1) * predictions.shape[1])


def uncertainty_scores(member_logits: ArrayLike,
                       mode: str = 'probs',
                       temperature: ArrayLike = 1.) -> dict[str, Array]:
  """Per-example OOD scores, each oriented so that higher means more OOD.

  Returns:
    A dict of ``(N,)`` arrays: ``msp`` = −max prob of the ensemble prediction, ``entropy`` =
    predictive entropy of the ensemble prediction (both follow ``mode``), ``mi`` = mutual
    information of the members (see :func:`mutual_information`).
  """
  probs = ensemble_probs(member_logits, mode, temperature)
  return {
      'msp': -max_prob(probs),
      'entropy': entropy(probs),
      'mi': mutual_information(member_probs(member_logits, temperature)),
  }


# --------------------------------------------------------------------------------------------
# Temperature scaling.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=('mode', 'num_grid', 'num_refine'))
def _fit_log_temperature(member_logits, labels, log_low, log_high, *, mode, num_grid,
                         num_refine):
  """Deterministic 1-D minimisation of the ensemble NLL over log T in [log_low, log_high]."""

  def loss(log_t):
    return nll(ensemble_probs(member_logits, mode, jnp.exp(log_t)), labels)

  # A coarse grid first, so that a non-unimodal NLL cannot trap the local search.
  grid = jnp.linspace(log_low, log_high, num_grid)
  grid_losses = jax.lax.map(loss, grid)
  best = jnp.argmin(grid_losses)
  low = grid[jnp.maximum(best - 1, 0)]
  high = grid[jnp.minimum(best + 1, num_grid - 1)]

  # Golden-section search inside the bracket around the best grid point.
  inv_phi = (math.sqrt(5.) - 1.) / 2.

  def golden_step(_, bracket):
    a, b = bracket
    c = b - inv_phi * (b - a)
    d = a + inv_phi * (b - a)
    keep_left = loss(c) < loss(d)
    return jnp.where(keep_left, a, c), jnp.where(keep_left, d, b)

  a, b = jax.lax.fori_loop(0, num_refine, golden_step, (low, high))
  # Never do worse than the best grid point or than T = 1 (log T = 0); ties keep T = 1.
  candidates = jnp.stack([jnp.zeros_like(log_low), (a + b) / 2., grid[best]])
  candidate_losses = jax.vmap(loss)(candidates)
  return candidates[jnp.argmin(candidate_losses)]


def fit_temperature(member_logits: ArrayLike,
                    labels: ArrayLike,
                    *,
                    mode: str = 'probs',
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
                    num_grid: int = 33,
                    num_refine: int = 40) -> float:
  """Fits one temperature T > 0 minimising the NLL of the ensemble prediction.

  Minimises ``nll(ensemble_probs(member_logits, mode, T), labels)`` over ``log T`` in
  ``[log bounds[0], log bounds[1]]``: a grid of ``num_grid`` points, then ``num_refine``
  golden-section steps inside the two grid cells around the best point. With ``mode='probs'``
  T divides each member's logits before its softmax. The result is deterministic and its NLL
  is never above that of T = 1 (T = 1 is returned when nothing beats it) or of the best grid
  point.

  Args:
    member_logits: validation logits ``(M, N, C)``.
    labels: validation labels ``(N,)``.
    mode: ensemble averaging mode, see :func:`ensemble_probs`.
    bounds: search interval for T.
    num_grid: grid points in log T.
    num_refine: golden-section iterations (each shrinks the bracket by 0.618).

  Returns:
    T as a Python float.
  """
  low, high = bounds
  if not 0. < low < 1. < high:
    raise ValueError(f'bounds must satisfy 0 < low < 1 < high, got {bounds}')
  member_logits = jnp.asarray(member_logits, jnp.float32)
  log_t = _fit_log_temperature(
      member_logits, jnp.asarray(labels), jnp.float32(math.log(low)),
      jnp.float32(math.log(high)), mode=mode, num_grid=num_grid, num_refine=num_refine)
  return float(jnp.exp(log_t))


# --------------------------------------------------------------------------------------------
# OOD detection (host-side NumPy; positive class = OOD, higher score = more OOD).
# --------------------------------------------------------------------------------------------


def _as_scores(scores_in: ArrayLike, scores_out: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  scores_in = np.asarray(scores_in, np.float64).ravel()
  scores_out = np.asarray(scores_out, np.float64).ravel()
  if scores_in.size == 0 or scores_out.size == 0:
    raise ValueError('need at least one in-distribution and one OOD score')
  return scores_in, scores_out


def auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
  """Area under the ROC curve for detecting OOD examples (positives) by a higher score.

  Rank form (Mann–Whitney U): ``(R_out − n_out (n_out + 1) / 2) / (n_in n_out)`` where
  ``R_out`` is the sum of the OOD scores' ranks in the pooled sample and tied scores share
  their average rank, i.e. ``P(s_out > s_in) + ½ P(s_out = s_in)``. Equals scikit-learn's
  ``roc_auc_score`` with OOD labelled 1.
  """
  scores_in, scores_out = _as_scores(scores_in, scores_out)
  pooled = np.concatenate([scores_in, scores_out])
  _, group, group_sizes = np.unique(pooled, return_inverse=True, return_counts=True)
  # Ranks are 1-based; a group of tied values occupying ranks (end-k+1 .. end) gets the mean.
  group_ends = np.cumsum(group_sizes)
  average_ranks = group_ends - (group_sizes - 1) / 2.
  rank_sum_out = average_ranks[group[scores_in.size:]].sum()
  n_in, n_out = scores_in.size, scores_out.size
  return float((rank_sum_out - n_out * (n_out + 1) / 2.) / (n_in * n_out))


def fpr_at_tpr(scores_in: ArrayLike, scores_out: ArrayLike, tpr: float = 0.95) -> float:
  """Smallest false-positive rate among thresholds whose true-positive rate is ≥ ``tpr``.

  An example is flagged OOD when its score is ``≥ t``; with OOD as positives,
  ``TPR(t) = #{s_out ≥ t} / n_out`` and ``FPR(t) = #{s_in ≥ t} / n_in``. Thresholds range over
  every observed score, so the result equals ``min(fpr[tpr_curve >= tpr])`` of scikit-learn's
  ``roc_curve``.
  """
  scores_in, scores_out = _as_scores(scores_in, scores_out)
  thresholds = np.unique(np.concatenate([scores_in, scores_out]))
  sorted_in, sorted_out = np.sort(scores_in), np.sort(scores_out)
  tprs = (sorted_out.size - np.searchsorted(sorted_out, thresholds, side='left')) / sorted_out.size
  fprs = (sorted_in.size - np.searchsorted(sorted_in, thresholds, side='left')) / sorted_in.size
  # The lowest threshold flags everything (TPR = 1), so the selection is never empty.
  return float(np.min(fprs[tprs >= tpr]))


# --------------------------------------------------------------------------------------------
# Summaries as Python floats.
# --------------------------------------------------------------------------------------------


def _probs_scores(probs: Array, labels: Array) -> dict[str, Array]:
  return {
      'accuracy': accuracy(probs, labels),
      'nll': nll(probs, labels),
      'brier': brier(probs, labels),
      'ece': ece(probs, labels),
  }


# One compiled program per call site instead of many small eager ops (the compile time of
# eager ops dominates on CPU for evaluation-sized arrays).
@functools.partial(jax.jit, static_argnames='mode')
def _ensemble_scores(member_logits, labels, temperature, mode):
  return _probs_scores(ensemble_probs(member_logits, mode, temperature), labels)


@jax.jit
def _member_scores(member_logits, labels):
  return jax.vmap(_probs_scores, in_axes=(0, None))(member_probs(member_logits), labels)


@jax.jit
def _diversity_scores(member_logits):
  return {
      'disagreement': disagreement(member_logits),
      'mutual_information': jnp.mean(mutual_information(member_probs(member_logits))),
  }


_jitted_uncertainty_scores = jax.jit(uncertainty_scores, static_argnames='mode')


@functools.partial(jax.jit, static_argnames='mode')
def _mean_entropy(member_logits, temperature, mode):
  return jnp.mean(entropy(ensemble_probs(member_logits, mode, temperature)))


def mean_predictive_entropy(member_logits: ArrayLike, *, temperature: float = 1.,
                            mode: str = 'probs') -> float:
  """The mean over examples of the ensemble prediction's entropy (:func:`entropy`, nats)."""
  return float(_mean_entropy(member_logits, temperature, mode=mode))


def evaluate(member_logits: ArrayLike,
             labels: ArrayLike,
             *,
             temperature: float = 1.,
             mode: str = 'probs') -> dict[str, float]:
  """Accuracy, NLL, Brier and ECE of the ensemble prediction at a given temperature.

  Returns:
    ``{'accuracy', 'nll', 'brier', 'ece', 'temperature'}`` as Python floats.
  """
  scores = _ensemble_scores(member_logits, labels, temperature, mode=mode)
  return {**{key: float(value) for key, value in scores.items()},
          'temperature': float(temperature)}


def member_metrics(member_logits: ArrayLike, labels: ArrayLike) -> list[dict[str, float]]:
  """Accuracy, NLL and ECE of each member on its own (T = 1), in member order."""
  scores = jax.device_get(_member_scores(member_logits, labels))
  num_members = len(scores['accuracy'])
  return [{key: float(scores[key][m]) for key in ('accuracy', 'nll', 'ece')}
          for m in range(num_members)]


def diversity(member_logits: ArrayLike) -> dict[str, float]:
  """Pairwise disagreement and mean mutual information over examples (T = 1)."""
  return {key: float(value) for key, value in _diversity_scores(member_logits).items()}


def members_mean(member_logits: ArrayLike, labels: ArrayLike) -> dict[str, float]:
  """The members' mean accuracy, NLL and ECE, each member scored on its own (T = 1)."""
  per_member = member_metrics(member_logits, labels)
  return {key: float(np.mean([m[key] for m in per_member])) for key in per_member[0]}


def ensemble_and_members(member_logits: ArrayLike, labels: ArrayLike, *,
                         mode: str = 'probs') -> dict[str, float]:
  """One flat dict: is the ensemble better than its members, and how much do they differ?

  Returns:
    :func:`evaluate` of the ensemble (T = 1), ``members_mean_{accuracy,nll,ece}``
    (:func:`members_mean`), and :func:`diversity`'s ``disagreement`` and
    ``mutual_information``, as Python floats.
  """
  return {**evaluate(member_logits, labels, mode=mode),
          **{f'members_mean_{k}': v for k, v in members_mean(member_logits, labels).items()},
          **diversity(member_logits)}


#: Per-example uncertainties compared with human disagreement, by their results.json name.
UNCERTAINTIES = ('entropy', 'mutual_information', 'one_minus_max_prob')


def disagreement_correlation(member_logits: ArrayLike,
                             agreement: ArrayLike,
                             mode: str = 'probs',
                             temperature: float = 1.) -> dict[str, float]:
  """Spearman rank correlation of each per-example uncertainty with ``1 − agreement``.

  Does the model's uncertainty track where people disagree? ``agreement`` is the fraction of
  annotators that chose the example's label (0–1). The uncertainties (:data:`UNCERTAINTIES`)
  are the predictive entropy of the ensemble prediction, the members' mutual information
  and ``1 − max prob`` (:func:`uncertainty_scores`). Tied values share their average rank.
  Examples whose agreement is not finite (not recorded) are left out.

  Args:
    member_logits: ``(M, N, C)``.
    agreement: ``(N,)``; NaN where unknown.
    mode: ensemble averaging mode, see :func:`ensemble_probs`.
    temperature: T applied to every member's logits.

  Returns:
    ``{uncertainty: rho}`` (NaN when a side is constant, e.g. MI of one member) and
    ``num_examples``, the examples with a known agreement.
  """
  agreement = np.asarray(agreement, np.float64)
  known = np.isfinite(agreement)
  scores = jax.device_get(_jitted_uncertainty_scores(member_logits, mode, temperature))
  uncertainties = {'entropy': scores['entropy'], 'mutual_information': scores['mi'],
                   'one_minus_max_prob': 1. + scores['msp']}
  human = 1. - agreement[known]
  results = {}
  for name in UNCERTAINTIES:
    values = np.asarray(uncertainties[name], np.float64)[known]
    # A constant side has no ranking (spearmanr would warn and return NaN).
    undefined = values.size < 2 or np.ptp(values) == 0 or np.ptp(human) == 0
    results[name] = math.nan if undefined else float(stats.spearmanr(values, human).statistic)
  return {**results, 'num_examples': int(known.sum())}


def ood_metrics(member_logits_in: ArrayLike,
                member_logits_out: ArrayLike,
                mode: str = 'probs',
                temperature: float = 1.) -> dict[str, float]:
  """AUROC and FPR at 95% TPR for OOD detection by MSP, predictive entropy and MI.

  Scores come from :func:`uncertainty_scores` (higher = more OOD) on in-distribution and
  OOD member logits; OOD examples are the positives.

  Returns:
    ``auroc_{msp,entropy,mi}`` and ``fpr95_{msp,entropy,mi}`` as Python floats.
  """
  scores_in = _jitted_uncertainty_scores(member_logits_in, mode, temperature)
  scores_out = _jitted_uncertainty_scores(member_logits_out, mode, temperature)
  results = {}
  for name in scores_in:
    results[f'auroc_{name}'] = auroc(scores_in[name], scores_out[name])
  for name in scores_in:
    results[f'fpr95_{name}'] = fpr_at_tpr(scores_in[name], scores_out[name], tpr=0.95)
  return results


# --------------------------------------------------------------------------------------------
# How far training moved the members (SVE family).
# --------------------------------------------------------------------------------------------


def singular_value_change(frozen: Any, s: Mapping, trainables: Any) -> float:
  """How far the members' singular values moved from the pretrained ones.

  ``mean over members m and decomposed matrices ℓ of ‖s_{m,ℓ} − s_ℓ‖₂ / ‖s_ℓ‖₂``; each matrix
  of a stacked (scanned) kernel counts once. Biases and heads are not counted.

  Args:
    frozen: first output of :func:`sve_jax.decompose`.
    s: second output of :func:`sve_jax.decompose` (the pretrained values).
    trainables: the members (leading axis ``M`` on every leaf).

  Returns:
    The mean relative change as a Python float (0 when no kernel is decomposed).
  """
  singular = factorize.factored_paths(frozen)
  pretrained = tree_lib.flatten_paths(s)
  ratios = []
  for path, members in tree_lib.flatten_paths(trainables).items():
    if path in singular:
      s0 = jnp.asarray(pretrained[path], jnp.float32)
      moved = jnp.linalg.norm(jnp.asarray(members, jnp.float32) - s0, axis=-1)
      ratios.append((moved / jnp.maximum(jnp.linalg.norm(s0, axis=-1), 1e-12)).ravel())
  return float(jnp.mean(jnp.concatenate(ratios))) if ratios else 0.
