"""Feature-space OOD scores: where an example's features lie, not what the head says.

Scores from the pooled features a backbone feeds its head, oriented like
:func:`sve_jax.eval.metrics.uncertainty_scores` (higher = more OOD):

* :func:`mahalanobis_scores`: the distance to the closest class mean under one covariance
  shared by the classes (Lee et al., 2018), fitted on the training split by
  :func:`fit_class_gaussians`. An ensemble's score is the mean of its members' scores, each
  against Gaussians fitted on that member's own features (:func:`member_mahalanobis`).
* :func:`feature_disagreement`: how far the members' features for one example spread: the
  trace of their covariance across members, ``Σ_d Var_m(f_{m,d})`` (0 for one model).

:func:`feature_ood_metrics` scores OOD detection by both (:data:`FEATURE_SCORES`), as
:func:`sve_jax.eval.metrics.ood_metrics` does by the logits' scores.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from numpy.typing import ArrayLike

from sve_jax.eval import metrics

#: The feature-space scores of :func:`feature_ood_scores`, by their results.json names.
FEATURE_SCORES = ('mahalanobis', 'feature_disagreement')


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

  Computed as ``xᵀPx − 2 xᵀPμ_c + μ_cᵀPμ_c`` (``P`` the symmetric precision): matrix
  products of ``(N, D)`` and ``(C, D)`` arrays, no ``(N, C, D)`` temporary.
  """
  features = np.asarray(features, np.float64)
  means = gaussians.means[~np.isnan(gaussians.means[:, 0])]  # (C', D), present classes
  projected, projected_means = features @ gaussians.precision, means @ gaussians.precision
  distances = (np.sum(projected * features, axis=1)[:, None] - 2. * projected @ means.T
               + np.sum(projected_means * means, axis=1)[None, :])
  return np.maximum(distances.min(axis=1), 0.)


def fit_member_gaussians(train_features: ArrayLike, train_labels: ArrayLike,
                         num_classes: int) -> list[ClassGaussians]:
  """Each member's :func:`fit_class_gaussians` on its own ``(M, N_train, D)`` features."""
  return [fit_class_gaussians(t, train_labels, num_classes) for t in np.asarray(train_features)]


def mean_mahalanobis(member_gaussians: Sequence[ClassGaussians],
                     member_features: ArrayLike) -> np.ndarray:
  """The members' mean :func:`mahalanobis_scores`, member ``m``'s ``(N, D)`` features
  against its own Gaussians; ``(M, N, D) → (N,)``."""
  return np.mean([mahalanobis_scores(f, g)
                  for g, f in zip(member_gaussians, np.asarray(member_features))], axis=0)


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
  return mean_mahalanobis(fit_member_gaussians(train_features, train_labels, num_classes),
                         features)


def feature_disagreement(member_features: ArrayLike) -> np.ndarray:
  """``Σ_d Var_m(f_{m,n,d})``: the spread of the members' features per example ``(N,)``."""
  member_features = np.asarray(member_features, np.float64)
  return member_features.var(axis=0).sum(axis=-1)


def feature_ood_scores(member_gaussians: Sequence[ClassGaussians],
                       member_features: ArrayLike) -> dict[str, np.ndarray]:
  """Per-example feature-space OOD scores of ``(M, N, D)`` member features, higher = more OOD.

  Returns:
    ``{'mahalanobis': (N,), 'feature_disagreement': (N,)}`` (:data:`FEATURE_SCORES`):
    :func:`mean_mahalanobis` against ``member_gaussians`` (:func:`fit_member_gaussians`) and
    :func:`feature_disagreement`.
  """
  return {'mahalanobis': mean_mahalanobis(member_gaussians, member_features),
          'feature_disagreement': feature_disagreement(member_features)}


def feature_ood_metrics(member_gaussians: Sequence[ClassGaussians], features_in: ArrayLike,
                        features_out: ArrayLike) -> dict[str, float]:
  """AUROC of OOD detection by each feature score (:func:`feature_ood_scores`), OOD
  examples the positives (:func:`sve_jax.eval.metrics.auroc`).

  Args:
    member_gaussians: each member's Gaussians (:func:`fit_member_gaussians`).
    features_in: ``(M, N_in, D)`` member features of in-distribution examples.
    features_out: ``(M, N_out, D)`` member features of OOD examples.

  Returns:
    ``{'auroc_mahalanobis', 'auroc_feature_disagreement'}`` as Python floats. With one
    member, feature disagreement is 0 everywhere and its AUROC 0.5.
  """
  scores_in = feature_ood_scores(member_gaussians, features_in)
  scores_out = feature_ood_scores(member_gaussians, features_out)
  return {f'auroc_{name}': metrics.auroc(scores_in[name], scores_out[name])
          for name in FEATURE_SCORES}
