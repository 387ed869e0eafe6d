"""Feature-space OOD scores: where an example's features lie, not what the head says.

Scores from the pooled features a backbone feeds its head, oriented like
:func:`sve_jax.eval.metrics.uncertainty_scores` (higher = more OOD):

* :func:`mahalanobis_scores`: the distance to the closest class mean under one covariance
  shared by the classes (Lee et al., 2018), fitted on the training split by
  :func:`fit_class_gaussians`. An ensemble's score is the mean of its members' scores, each
  against Gaussians fitted on that member's own features (:func:`member_mahalanobis`).
* :func:`feature_disagreement`: how far the members' features for one example spread: the
  trace of their covariance across members, ``Σ_d Var_m(f_{m,d})`` (0 for one model).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike


class ClassGaussians(NamedTuple):
  """Class-conditional Gaussians with a shared covariance.

  Attributes:
    means: ``(C, D)`` per-class feature means.
    precision: ``(D, D)`` the pseudo-inverse of the shared within-class covariance.
  """
  means: np.ndarray
  precision: np.ndarray


def fit_class_gaussians(features: ArrayLike, labels: ArrayLike,
                        num_classes: int) -> ClassGaussians:
  """Class means and the shared (maximum-likelihood) covariance of ``features``.

  Args:
    features: ``(N, D)``.
    labels: ``(N,)`` integer classes in ``[0, num_classes)``.
    num_classes: ``C``; a class without examples gets no mean (its row is NaN and never the
      closest).

  Raises:
    ValueError: mismatched shapes, or fewer than two examples.
  """
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  if features.ndim != 2 or labels.shape != features.shape[:1] or len(labels) < 2:
    raise ValueError(f'fit_class_gaussians needs (N, D) features and (N,) labels, N ≥ 2; '
                     f'got {features.shape} and {labels.shape}')
  means = np.full((num_classes, features.shape[1]), np.nan)
  centered = np.empty_like(features)
  for c in range(num_classes):
    rows = labels == c
    if rows.any():
      means[c] = features[rows].mean(0)
      centered[rows] = features[rows] - means[c]
  covariance = centered.T @ centered / len(features)
  return ClassGaussians(means, np.linalg.pinv(covariance, hermitian=True))


def mahalanobis_scores(features: ArrayLike, gaussians: ClassGaussians) -> np.ndarray:
  """``min_c (x − μ_c)ᵀ Σ⁻¹ (x − μ_c)`` for each row of ``features`` ``(N, D)``; ``(N,)``.
  """
  features = np.asarray(features, np.float64)
  present = ~np.isnan(gaussians.means[:, 0])
  diffs = features[:, None, :] - gaussians.means[None, present, :]  # (N, C, D)
  distances = np.einsum('ncd,de,nce->nc', diffs, gaussians.precision, diffs)
  return distances.min(axis=1)


def member_mahalanobis(train_features: ArrayLike, train_labels: ArrayLike, num_classes: int,
                       features: ArrayLike) -> np.ndarray:
  """The members' mean Mahalanobis score, each member against its own Gaussians.

  Args:
    train_features: ``(M, N_train, D)`` each member's features on the training split.
    train_labels: ``(N_train,)``.
    num_classes: ``C``.
    features: ``(M, N, D)`` each member's features on the examples to score.

  Returns:
    ``(N,)``.
  """
  train_features, features = np.asarray(train_features), np.asarray(features)
  return np.mean([mahalanobis_scores(f, fit_class_gaussians(t, train_labels, num_classes))
                  for t, f in zip(train_features, features)], axis=0)


def feature_disagreement(member_features: ArrayLike) -> np.ndarray:
  """``Σ_d Var_m(f_{m,n,d})``: the spread of the members' features per example ``(N,)``."""
  member_features = np.asarray(member_features, np.float64)
  return member_features.var(axis=0).sum(axis=-1)
