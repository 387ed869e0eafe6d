"""Feature-space OOD scores against scikit-learn's covariance estimator."""
import numpy as np
import pytest
from sklearn import covariance as sk_covariance

from sve_jax.eval import feature_ood
from sve_jax.eval import metrics


def _features(seed=0, n=300, d=5, classes=3):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  centres = rng.normal(scale=3., size=(classes, d))
  mixing = rng.normal(size=(d, d))
  return centres[labels] + rng.normal(size=(n, d)) @ mixing, labels


def test_mahalanobis_equals_sklearn_with_the_shared_within_class_covariance():
  features, labels = _features()
  gaussians = feature_ood.fit_class_gaussians(features, labels, 3)
  centred = features - gaussians.means[labels]
  reference = sk_covariance.EmpiricalCovariance(assume_centered=True).fit(centred)
  queries = _features(seed=1, n=20)[0]
  expected = np.min([reference.mahalanobis(queries - mean) for mean in gaussians.means],
                    axis=0)
  np.testing.assert_allclose(feature_ood.mahalanobis_scores(queries, gaussians), expected,
                             rtol=1e-8)


def test_far_examples_score_higher_and_separate_by_auroc():
  features, labels = _features()
  gaussians = feature_ood.fit_class_gaussians(features, labels, 3)
  near = _features(seed=2, n=100)[0]
  far = near + 15.
  scores_near = feature_ood.mahalanobis_scores(near, gaussians)
  scores_far = feature_ood.mahalanobis_scores(far, gaussians)
  assert metrics.auroc(scores_near, scores_far) > 0.99


def test_a_class_without_training_examples_is_never_the_closest():
  features, labels = _features()
  gaussians = feature_ood.fit_class_gaussians(features, labels, 4)
  assert np.isnan(gaussians.means[3]).all()
  assert np.isfinite(feature_ood.mahalanobis_scores(features[:5], gaussians)).all()


def test_member_scores_average_each_members_own_fit():
  (f0, labels), (f1, _) = _features(seed=0), _features(seed=3)
  f1 = f1[:len(f0)]
  queries = np.stack([f0[:7], f1[:7]])
  expected = np.mean([
      feature_ood.mahalanobis_scores(q, feature_ood.fit_class_gaussians(t, labels, 3))
      for t, q in zip((f0, f1), queries)], axis=0)
  np.testing.assert_allclose(
      feature_ood.member_mahalanobis(np.stack([f0, f1]), labels, 3, queries), expected)


def test_feature_disagreement_is_the_trace_of_the_members_covariance():
  rng = np.random.default_rng(4)
  member_features = rng.normal(size=(4, 6, 3))
  expected = [np.trace(np.cov(member_features[:, n, :].T, bias=True)) for n in range(6)]
  np.testing.assert_allclose(feature_ood.feature_disagreement(member_features), expected)
  np.testing.assert_allclose(feature_ood.feature_disagreement(member_features[:1]), 0.)


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError):
    feature_ood.fit_class_gaussians(np.zeros((5, 2)), np.zeros(4, int), 2)


def test_feature_ood_metrics_are_sklearns_aurocs_of_the_member_scores():
  from sklearn.metrics import roc_auc_score
  (f0, labels), (f1, _) = _features(seed=0), _features(seed=3)
  train = np.stack([f0, f1[:len(f0)]])
  rng = np.random.default_rng(5)
  inside = rng.normal(size=(2, 30, 5))
  outside = rng.normal(size=(2, 20, 5)) * np.array([[[1.]], [[3.]]]) + 2.
  gaussians = feature_ood.fit_member_gaussians(train, labels, 3)
  got = feature_ood.feature_ood_metrics(gaussians, inside, outside)
  is_ood = np.r_[np.zeros(30), np.ones(20)]
  both = np.concatenate([inside, outside], axis=1)
  mahalanobis = feature_ood.member_mahalanobis(train, labels, 3, both)
  spread = both.var(axis=0).sum(-1)
  assert got == pytest.approx({'auroc_mahalanobis': roc_auc_score(is_ood, mahalanobis),
                               'auroc_feature_disagreement': roc_auc_score(is_ood, spread)})
  assert 0.5 < got['auroc_feature_disagreement'] and 0.5 < got['auroc_mahalanobis']
