"""Laplace approximations over pytrees: the GGN's diagonal, the diagonal posterior, its draws.

A Laplace approximation (MacKay 1992; Daxberger et al. 2021, "Laplace Redux") replaces the
posterior over parameters θ by the Gaussian at a MAP estimate θ*::

  p(θ | D) ≈ N(θ*, P⁻¹),   P = Σ_n J_nᵀ H_n J_n + δ I

with ``J_n`` the Jacobian of the model's outputs ``f(x_n; θ)`` (``K`` of them) at θ*, ``H_n``
the Hessian of the negative log-likelihood in those outputs, and δ the precision of the
isotropic prior ``N(0, δ⁻¹ I)``. ``Σ_n J_nᵀ H_n J_n`` is the generalised Gauss-Newton (GGN)
matrix: for softmax cross-entropy ``H_n = diag(p_n) − p_n p_nᵀ`` and the GGN is the Fisher;
for a Gaussian likelihood with noise σ, ``H_n = I / σ²``, and for a model linear in θ the GGN
is the exact Hessian (Bayesian linear regression: the Laplace posterior is the exact one).

A likelihood enters as ``hessian_sqrt(outputs (B, K)) -> (B, K, K)``: per example a square
root ``L_n`` with ``L_n L_nᵀ = H_n``. The GGN's diagonal is then
``Σ_n Σ_k (J_nᵀ L_n[:, k])²``, one vector-Jacobian product per column and example, with the
memory of one gradient per example: no Jacobian and no ``(P, P)`` matrix is ever formed.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from sve_jax.tree import PyTree

#: ``outputs (B, K) -> (B, K, K)``: per example a square root of the negative
#: log-likelihood's Hessian in the outputs.
HessianSqrt = Callable[[jax.Array], jax.Array]


def softmax_hessian_sqrt(logits: jax.Array) -> jax.Array:
  """``L`` with ``L Lᵀ = diag(p) − p pᵀ`` per example, ``p = softmax(logits)`` (float32).

  Column ``c`` is ``√p_c (e_c − p)``, so ``Jᵀ L[:, c] = −√p_c ∇θ log p_c``: the GGN's diagonal
  ``Σ_c p_c (∇θ log p_c)²`` is the Fisher's, the squared gradient expected under the model's
  own predictive (no labels needed).

  Args:
    logits: ``(B, C)``.

  Returns:
    ``(B, C, C)``.
  """
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  eye = jnp.eye(p.shape[-1], dtype=p.dtype)
  return (eye[None] - p[:, :, None]) * jnp.sqrt(p)[:, None, :]


def gaussian_hessian_sqrt(outputs: jax.Array, noise_std: float = 1.) -> jax.Array:
  """``I / σ`` per example: the root of a Gaussian likelihood's Hessian ``I / σ²``.

  Args:
    outputs: ``(B, K)`` predicted means.
    noise_std: σ, the observation noise's standard deviation.

  Returns:
    ``(B, K, K)``.
  """
  batch, k = outputs.shape
  return jnp.broadcast_to(jnp.eye(k, dtype=jnp.float32) / noise_std, (batch, k, k))


def ggn_diagonal(output_fn: Callable[[PyTree, Any], jax.Array], params: PyTree, inputs: Any,
                 hessian_sqrt: HessianSqrt, mask: jax.Array | None = None) -> PyTree:
  """The diagonal of one batch's GGN at ``params``: ``Σ_n mask_n Σ_k (J_nᵀ L_n[:, k])²``.

  Each example's Jacobian is taken on its own (``jax.vmap`` over examples of a batch of one),
  so ``output_fn`` must treat examples independently (no batch statistics).

  Args:
    output_fn: ``(params, inputs) -> (B, K)`` outputs of a batch.
    params: the point θ* (a pytree of float arrays).
    inputs: a batch: a pytree of arrays with a leading example axis ``B``.
    hessian_sqrt: the likelihood (:data:`HessianSqrt`), applied to the outputs at θ*.
    mask: ``(B,)``, the examples to count (padding ``False``); ``None`` counts all.

  Returns:
    ``params``' tree: each leaf the summed GGN diagonal of its entries (float32).
  """

  def one_example(x, weight):
    x = jax.tree_util.tree_map(lambda v: v[None], x)
    out, vjp = jax.vjp(lambda p: output_fn(p, x)[0], params)
    root = hessian_sqrt(out[None].astype(jnp.float32))[0]  # (K, K)

    def add_column(total, column):  # a scan over columns: one gradient in memory, not K
      (grad,) = vjp(column.astype(out.dtype))
      return jax.tree_util.tree_map(
          lambda t, g: t + jnp.square(g.astype(jnp.float32)), total, grad), None

    zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
    total, _ = jax.lax.scan(add_column, zeros, root.T)
    return jax.tree_util.tree_map(lambda t: weight * t, total)

  batch = jax.tree_util.tree_leaves(inputs)[0].shape[0]
  weights = jnp.ones(batch, jnp.float32) if mask is None else mask.astype(jnp.float32)
  per_example = jax.vmap(one_example)(inputs, weights)
  return jax.tree_util.tree_map(lambda t: t.sum(axis=0), per_example)


def diagonal_posterior_std(ggn_diag: PyTree, prior_precision: float,
                           ggn_scale: float = 1.) -> PyTree:
  """The diagonal Laplace posterior's standard deviations ``(ggn_scale · g + δ)^(−1/2)``.

  Args:
    ggn_diag: the GGN's diagonal (:func:`ggn_diagonal`, summed over the fitted examples).
    prior_precision: δ > 0; ``inf`` gives 0 (the posterior collapses onto the MAP).
    ggn_scale: what ``ggn_diag`` is multiplied by first: ``N / n`` when it was summed over
      ``n`` of the ``N`` training examples (an unbiased estimate of the full sum).
  """
  return jax.tree_util.tree_map(
      lambda g: jax.lax.rsqrt(ggn_scale * g + prior_precision), ggn_diag)


def sample_diagonal(key: jax.Array, mean: PyTree, std: PyTree, num_samples: int) -> PyTree:
  """``num_samples`` draws of ``N(mean, diag(std²))``, stacked on a new leading axis.

  Draw ``s`` is ``mean + std ⊙ ε_s``, ``ε_s ~ N(0, I)`` from ``key`` alone: the same key
  gives the same ``ε`` for any ``std``, so posteriors that differ only in their prior
  precision are compared on common draws.

  Returns:
    ``mean``'s tree with leaves ``(num_samples, *leaf.shape)``.
  """
  leaves, treedef = jax.tree_util.tree_flatten(mean)
  keys = jax.random.split(key, len(leaves))
  stds = treedef.flatten_up_to(std)
  draws = [m + s * jax.random.normal(k, (num_samples,) + jnp.shape(m), jnp.result_type(m))
           for m, s, k in zip(leaves, stds, keys)]
  return jax.tree_util.tree_unflatten(treedef, draws)
