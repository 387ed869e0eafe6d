"""Laplace-LoRA (``laplace_lora``): one LoRA fitted by MAP, then a Laplace posterior over its
weights, whose M draws are reported as members.

Yang, Robeyns, Wang and Aitchison, "Bayesian low-rank adaptation for large language models"
(ICLR 2024). Training is :mod:`lora_ensemble`'s with one member: rank-``lora_rank`` adapters
``A`` (Xavier-uniform, gain 10) and ``B`` (zeros) on the attention q, k, v and o kernels, a
fresh head, the LoRA learning rate, the usual train loop. After training, the run calls
:attr:`~sve_jax.methods.base.MethodSetup.fit_posterior` on the best checkpoint
(:func:`fit_posterior`):

* **Posterior: diagonal Laplace over every LoRA weight** (all ``A`` and ``B``), centred on
  the MAP, with precision ``(N / n) · diag(GGN) + δ``; the GGN's diagonal is exact
  (:func:`sve_jax.methods.laplace.ggn_diagonal`; for softmax cross-entropy it is the
  Fisher's, ``Σ_c p_c (∇ log p_c)²`` per example), summed over the ``n`` training examples
  the run passes (``config.posterior_fit_examples``, a seeded subset) and scaled to the
  split's ``N``. The head stays at its MAP: the paper's posterior is over the LoRA weights.
  Why not the paper's KFAC: KFAC needs each adapted kernel's inputs and output gradients,
  which an adapter composed into the backbone's params (``W + A B``) does not expose, and
  weight sharing over tokens needs its own variants; the diagonal needs only
  vector-Jacobian products of the method's own forward, so it runs on every backbone
  unchanged, in the memory of one gradient per example (C backward passes per example).
  Not last-layer: that would be a posterior over the head, not over the LoRA weights.
* **Prior precision δ**: from the grid ``config.laplace_prior_precisions``, the one whose
  M-draw predictive has the lowest NLL on the validation split (the first, in grid order,
  on ties). Every δ is scored on the same draws ``ε`` (members ``MAP + σ_δ ⊙ ε``), so the
  choice compares δ alone. The validation split, not the marginal likelihood: every
  method here is tuned on it, and a diagonal posterior's evidence ignores the correlations
  it drops.
* **Prediction**: M draws of the LoRA weights, each with the MAP head, run as the members of
  a LoRA ensemble (``forward(train=False)`` on them is ``(M, B, C)``); disagreement, mutual
  information and OOD scores then come from the shared evaluation, as for the ensembles.
  Before the fit (validation during training) the forward runs the one MAP model.

The trainables file and checkpoints hold the MAP; the posterior is refitted from them (and
the data) whenever the run evaluates or predicts.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import jax
import jax.numpy as jnp

from sve_jax.methods import base
from sve_jax.methods import laplace
from sve_jax.methods import lora_ensemble
from sve_jax.tree import PyTree

if TYPE_CHECKING:
  from sve_jax.models import Backbone


def check_prior_precisions(values: Sequence[float],
                           key: str = 'config.laplace_prior_precisions') -> tuple[float, ...]:
  """``values`` as a tuple of floats, checked.

  Raises:
    ValueError: naming ``key``, unless ``values`` is a non-empty sequence of numbers > 0
      (``inf`` allowed: the posterior collapses onto the MAP).
  """
  try:
    grid = tuple(float(v) for v in values)
  except (TypeError, ValueError):
    grid = ()
  if not grid or not all(v > 0 for v in grid):  # also refuses NaN
    raise ValueError(f'{key}={values!r} must be a non-empty list of prior precisions > 0, '
                     'e.g. (0.01, 1., 100.)')
  return grid


def _lora_and_rest(trainables: PyTree) -> tuple[dict, dict]:
  """``(lora, rest)``: the LoRA factor trees (:data:`lora_ensemble.FACTOR_KEYS`) and the
  other trainables (the head), of one member's tree."""
  lora = {k: trainables[k] for k in lora_ensemble.FACTOR_KEYS}
  return lora, {k: v for k, v in trainables.items() if k not in lora}


def ggn_diagonal(forward: base.Forward, frozen: PyTree, trainables: PyTree,
                 batches: Iterable[dict]) -> tuple[dict, int]:
  """The GGN's diagonal over the LoRA weights of a one-member ``trainables``, summed over
  ``batches``' real examples (:func:`laplace.ggn_diagonal`, softmax likelihood).

  Args:
    forward: the method's forward (:data:`~sve_jax.methods.base.Forward`); run with
      ``train=False``.
    frozen: its frozen tree.
    trainables: the trained trainables (member axis of 1).
    batches: ``{'inputs', 'mask'}`` batches.

  Returns:
    ``(ggn, n)``: the diagonal as the ``{'lora_a', 'lora_b'}`` trees of one member, and the
    number of examples summed.
  """
  lora, rest = _lora_and_rest(base.unstack_first(trainables))

  @jax.jit
  def batch_ggn(frozen, rest, lora, inputs, mask):
    def outputs(lora, x):  # one member's logits (B, C)
      member = base.identical_copies({**rest, **lora}, 1)
      return forward(frozen, member, x, jax.random.key(0), False)[0]
    return laplace.ggn_diagonal(outputs, lora, inputs, laplace.softmax_hessian_sqrt, mask)

  total, count = None, 0
  for batch in batches:
    ggn = batch_ggn(frozen, rest, lora, batch['inputs'], batch['mask'])
    total = ggn if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, ggn)
    count += int(jnp.sum(batch['mask']))  # a global array's sum: any process may read it
  if not count:
    raise ValueError('laplace_lora: the posterior was given no training example')
  return total, count


def posterior_members(trainables: PyTree, std: PyTree, key: jax.Array,
                      num_members: int) -> PyTree:
  """``num_members`` members: LoRA weights drawn from ``N(MAP, diag(std²))``
  (:func:`laplace.sample_diagonal`), each with the MAP's other trainables (the head).

  Args:
    trainables: the MAP (member axis of 1).
    std: the posterior's standard deviations, as the LoRA factor trees of one member.
    key: PRNG key of the draws.
    num_members: M.
  """
  lora, rest = _lora_and_rest(base.unstack_first(trainables))
  return {**base.identical_copies(rest, num_members),
          **laplace.sample_diagonal(key, lora, std, num_members)}


def fit_posterior(forward: base.Forward, prior_precisions: tuple[float, ...],
                  num_members: int, frozen: PyTree, trainables: PyTree,
                  data: base.PosteriorData) -> base.Posterior:
  """The diagonal Laplace posterior at ``trainables``, its δ chosen on the validation split,
  as ``num_members`` drawn members (the module docstring says which and why).

  Args:
    forward: the method's forward.
    prior_precisions: the grid of δ.
    num_members: M, the draws reported as members.
    frozen: the frozen tree.
    trainables: the MAP (member axis of 1).
    data: the training batches, the split's size, the validation scorer and the draws' key.

  Returns:
    The members of the chosen δ, and ``info``: the approximation, the chosen
    ``prior_precision``, ``validation_nll`` per δ of the grid and the examples fitted.
  """
  ggn, fitted = ggn_diagonal(forward, frozen, trainables, data.batches)
  scale = data.num_train / fitted

  def members(delta: float) -> PyTree:
    std = laplace.diagonal_posterior_std(ggn, delta, scale)
    return posterior_members(trainables, std, data.key, num_members)

  nll = {delta: float(data.validation_nll(members(delta))) for delta in prior_precisions}
  chosen = min(prior_precisions, key=lambda d: (math.isnan(nll[d]), nll[d]))
  info: dict[str, Any] = {
      'approximation': 'diagonal GGN Laplace over the LoRA weights (lora_a, lora_b)',
      'prior_precision': chosen,
      'validation_nll': {f'{delta:g}': value for delta, value in nll.items()},
      'fit_examples': fitted, 'train_examples': int(data.num_train)}
  return base.Posterior(members(chosen), info)


def build(backbone: Backbone, options: base.MethodOptions, key: jax.Array) -> base.MethodSetup:
  """One LoRA of rank ``options.lora_rank`` (:func:`lora_ensemble.lora_setup`) whose
  :attr:`~sve_jax.methods.base.MethodSetup.fit_posterior` draws ``options.num_members``
  members from ``options.laplace_prior_precisions``' best posterior.

  Raises:
    ValueError: the backbone has no attention, or a bad grid of prior precisions (naming
      the config key).
  """
  grid = check_prior_precisions(options.laplace_prior_precisions)
  setup = lora_ensemble.lora_setup('laplace_lora', backbone, options, key, 1)
  return dataclasses.replace(setup, fit_posterior=functools.partial(
      fit_posterior, setup.forward, grid, int(options.num_members)))


METHOD = base.Method('laplace_lora', build, trains_ensemble=False,
                     learning_rate_key=base.LORA_LEARNING_RATE)
