"""The Laplace core against closed forms: Bayesian linear regression (the GGN is the exact
Hessian, the Laplace posterior the exact posterior) and logistic regression against a
converged Newton iteration in NumPy; the draws' moments."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax.methods import laplace


def _linear(params, x):
  """A linear model with its weights split over two leaves: outputs (B, 1)."""
  return (x[:, :2] @ params['w1'] + x[:, 2:] @ params['w2'])[:, None]


def _neg_log_posterior(params, x, y, noise_std, prior_precision):
  flat = jnp.concatenate([params['w1'], params['w2']])
  residual = y - _linear(params, x)[:, 0]
  return (0.5 * jnp.sum(residual ** 2) / noise_std ** 2
          + 0.5 * prior_precision * jnp.sum(flat ** 2))


def _map(x, y, noise_std, prior_precision):
  """The MAP by gradient descent on the negative log posterior (no closed form used)."""
  grad = jax.grad(lambda p: _neg_log_posterior(p, x, y, noise_std, prior_precision))
  rate = 1. / (jnp.linalg.norm(x, 2) ** 2 / noise_std ** 2 + prior_precision)  # 1 / L
  step = lambda _, p: jax.tree_util.tree_map(lambda w, g: w - rate * g, p, grad(p))
  return jax.jit(lambda p: jax.lax.fori_loop(0, 1000, step, p))(
      {'w1': jnp.zeros(2), 'w2': jnp.zeros(1)})


def _flat(tree):
  return np.concatenate([np.asarray(tree['w1']), np.asarray(tree['w2'])])


def test_bayesian_linear_regression_laplace_is_the_closed_form_posterior():
  rng = np.random.default_rng(0)
  n, noise_std, prior_precision = 40, 0.5, 2.
  # Orthogonal features: the exact posterior covariance is diagonal, so the diagonal
  # Laplace must equal it entry for entry (mean and the whole covariance).
  q, _ = np.linalg.qr(rng.normal(size=(n, 3)))
  x = (q * np.array([3., 1., 0.4])).astype(np.float32)
  y = (x @ np.array([1., -2., 0.5]) + noise_std * rng.normal(size=n)).astype(np.float32)
  precision = x.T @ x / noise_std ** 2 + prior_precision * np.eye(3)
  covariance = np.linalg.inv(precision)
  mean = covariance @ x.T @ y / noise_std ** 2

  params = _map(jnp.asarray(x), jnp.asarray(y), noise_std, prior_precision)
  hessian_sqrt = lambda out: laplace.gaussian_hessian_sqrt(out, noise_std)
  ggn = laplace.ggn_diagonal(_linear, params, jnp.asarray(x), hessian_sqrt)
  std = laplace.diagonal_posterior_std(ggn, prior_precision)
  np.testing.assert_allclose(_flat(params), mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.diag(_flat(std) ** 2), covariance, rtol=1e-4, atol=1e-7)


def test_ggn_diagonal_is_the_exact_precisions_diagonal_and_counts_only_masked_examples():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(30, 3)).astype(np.float32)  # correlated features this time
  params = {'w1': jnp.ones(2), 'w2': jnp.ones(1)}
  hessian_sqrt = lambda out: laplace.gaussian_hessian_sqrt(out, 0.5)
  ggn = laplace.ggn_diagonal(_linear, params, jnp.asarray(x), hessian_sqrt)
  np.testing.assert_allclose(_flat(ggn), np.diag(x.T @ x) / 0.25, rtol=1e-5)
  mask = np.arange(30) < 12
  masked = laplace.ggn_diagonal(_linear, params, jnp.asarray(x), hessian_sqrt,
                                jnp.asarray(mask))
  np.testing.assert_allclose(_flat(masked), np.diag(x[:12].T @ x[:12]) / 0.25, rtol=1e-5)
  # Scaling a subset's sum to the whole set: N / n times the subset's diagonal.
  std = laplace.diagonal_posterior_std(masked, 3., ggn_scale=2.5)
  np.testing.assert_allclose(_flat(std), (2.5 * _flat(masked) + 3.) ** -0.5, rtol=1e-6)


def _newton_logistic(x, y, prior_precision, steps=50):
  """The MAP and Hessian of L2-regularised logistic regression by Newton's method."""
  w = np.zeros(x.shape[1])
  for _ in range(steps):
    p = 1. / (1. + np.exp(-x @ w))
    grad = x.T @ (p - y) + prior_precision * w
    hessian = x.T @ (x * (p * (1 - p))[:, None]) + prior_precision * np.eye(x.shape[1])
    w -= np.linalg.solve(hessian, grad)
  assert np.linalg.norm(grad) < 1e-8
  return w, hessian


def test_logistic_regression_laplace_matches_a_newton_laplace_in_numpy():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(80, 3))
  y = (rng.uniform(size=80) < 1. / (1. + np.exp(-x @ np.array([1.5, -1., 0.5])))).astype(float)
  prior_precision = 1.
  w, hessian = _newton_logistic(x, y, prior_precision)
  # Two-class softmax with logits (0, x·w) is the Bernoulli likelihood with logit x·w.
  logits = lambda p, inputs: jnp.stack([jnp.zeros(inputs.shape[0]), inputs @ p['w']], -1)
  params = {'w': jnp.asarray(w, jnp.float32)}
  ggn = laplace.ggn_diagonal(logits, params, jnp.asarray(x, jnp.float32),
                             laplace.softmax_hessian_sqrt)
  std = laplace.diagonal_posterior_std(ggn, prior_precision)
  np.testing.assert_allclose(np.asarray(ggn['w']) + prior_precision, np.diag(hessian),
                             rtol=1e-4)
  np.testing.assert_allclose(np.asarray(std['w']), np.diag(hessian) ** -0.5, rtol=1e-4)


def test_softmax_hessian_sqrt_is_a_root_of_the_softmax_hessian():
  logits = jnp.array([[0.3, -1., 2., 0.], [5., 5., -3., 1.]])
  root = laplace.softmax_hessian_sqrt(logits)
  p = np.asarray(jax.nn.softmax(logits))
  for n in range(2):
    np.testing.assert_allclose(root[n] @ root[n].T, np.diag(p[n]) - np.outer(p[n], p[n]),
                               atol=1e-6)


def test_draws_have_the_posteriors_mean_and_covariance():
  mean = {'a': jnp.array([1., -2., 0.5]), 'b': jnp.array([[3., 0.], [0., -1.]])}
  std = {'a': jnp.array([0.1, 1., 2.]), 'b': jnp.array([[0.5, 0.2], [1.5, 0.01]])}
  draws = laplace.sample_diagonal(jax.random.key(0), mean, std, 20_000)
  flat = np.concatenate([np.asarray(draws['a']), np.asarray(draws['b']).reshape(-1, 4)], 1)
  mu = np.concatenate([np.asarray(mean['a']), np.asarray(mean['b']).ravel()])
  sigma = np.concatenate([np.asarray(std['a']), np.asarray(std['b']).ravel()])
  assert draws['b'].shape == (20_000, 2, 2)
  np.testing.assert_array_less(np.abs(flat.mean(0) - mu), 4 * sigma / np.sqrt(20_000))
  covariance = np.cov(flat, rowvar=False)
  np.testing.assert_allclose(np.sqrt(np.diag(covariance)), sigma, rtol=0.03)
  correlation = covariance / np.outer(sigma, sigma)
  assert np.abs(correlation - np.diag(np.diag(correlation))).max() < 0.04


def test_common_draws_across_prior_precisions_and_an_infinite_one_gives_the_map():
  mean = {'a': jnp.array([1., -2.])}
  ggn = {'a': jnp.array([4., 0.])}
  key = jax.random.key(1)
  wide, narrow, point = (laplace.sample_diagonal(
      key, mean, laplace.diagonal_posterior_std(ggn, delta), 5)
                         for delta in (0.5, 50., np.inf))
  eps = lambda d, delta: (d['a'] - mean['a']) * np.sqrt(ggn['a'] + delta)
  np.testing.assert_allclose(eps(wide, 0.5), eps(narrow, 50.), rtol=1e-5)
  np.testing.assert_array_equal(point['a'], np.broadcast_to(mean['a'], (5, 2)))
  assert np.all(np.asarray(wide['a']).std(0) > 0)
