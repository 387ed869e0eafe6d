"""Methods behind one interface: what is trained per member and how members run.

A method turns a :class:`~sve_jax.models.Backbone` into a :class:`MethodSetup`: the frozen
tree, the initial per-member trainables and a forward ``(frozen, trainables, inputs, rng,
train) -> member_logits (M, B, C)`` (:data:`Forward`), and the same forward returning each
member's pooled features too (:data:`FeaturesForward`, :attr:`MethodSetup.features`). It
reads its :class:`MethodOptions` (the run config's ``num_members``, ``noise_std``,
``execution``, ``lora_rank``, ``head_init_std``, ``member_data_order``, ``sve_dropout``,
``laplace_prior_precisions``), never the whole config. The train step, checkpoints and report are shared by all methods.

What each method trains per member (everything else is frozen and shared) and the M it
reports (the leading axis of its evaluation logits):

* ``sve`` (M): singular values of the kernels the backbone's SVE rules decompose, the biases
  of those layers, a head; dropout in training only with ``sve_dropout``.
  ``single_svf`` (1): the same with one member.
* ``single_ft`` (1): every backbone param, fresh head, dropout in training.
* ``deep_ensemble`` (M): M such full models, each with its own head, dropout masks and data
  order (:attr:`MethodSetup.per_member_data`).
* ``mc_dropout`` (M): one ``single_ft`` model; M dropout samples at evaluation.
* ``lora_ensemble`` (M): rank-``lora_rank`` LoRA on the attention q, k, v, o kernels
  (A Xavier-uniform with gain 10, B = 0), a head.
* ``batch_ensemble`` (M): rank-1 fast weights ``W ⊙ r sᵀ`` on the SVE kernels, the biases of
  those layers, a head.
* ``laplace_lora`` (M): one ``lora_ensemble`` member; after training, a diagonal Laplace
  posterior over its LoRA weights (:attr:`MethodSetup.fit_posterior`), whose M draws
  evaluation reports.

Each method lives in its own module, with its ``build`` and its :class:`Method` record (how
many members it reports and trains, its learning-rate group); :data:`REGISTRY` lists the
records. Adding a method means writing its module and adding its record there. Every method
describes one member's params by ``member_params(frozen, t_m)``
(:data:`sve_jax.ensemble.MemberParams`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import jax

from sve_jax.methods import batch_ensemble
from sve_jax.methods import deep_ensemble
from sve_jax.methods import laplace_lora
from sve_jax.methods import lora_ensemble
from sve_jax.methods import mc_dropout
from sve_jax.methods import single_ft
from sve_jax.methods import sve
from sve_jax.methods.base import FeaturesForward
from sve_jax.methods.base import Forward
from sve_jax.methods.base import Method
from sve_jax.methods.base import MethodOptions
from sve_jax.methods.base import MethodSetup
from sve_jax.methods.base import Posterior
from sve_jax.methods.base import PosteriorData

if TYPE_CHECKING:
  from sve_jax.models import Backbone


#: Every method by ``config.method``, in the order reports list them.
REGISTRY: dict[str, Method] = {method.name: method for method in (
    sve.METHOD, sve.SINGLE_SVF, single_ft.METHOD, deep_ensemble.METHOD, mc_dropout.METHOD,
    lora_ensemble.METHOD, batch_ensemble.METHOD, laplace_lora.METHOD)}
METHODS = tuple(REGISTRY)


def get(method: str) -> Method:
  """The :class:`Method` record of ``method``.

  Raises:
    ValueError: an unknown method (names the config key and the known ones).
  """
  if method not in REGISTRY:
    raise ValueError(f'config.method={method!r} is not a known method; expected one of '
                     f'{METHODS}')
  return REGISTRY[method]


def build(method: str, backbone: Backbone, options: MethodOptions | Mapping[str, Any],
          key: jax.Array) -> MethodSetup:
  """Builds ``method`` on ``backbone``.

  Args:
    method: a name of :data:`METHODS`.
    backbone: a :class:`sve_jax.models.Backbone`.
    options: the method's :class:`MethodOptions`, or a run's top-level config (or any
      mapping with its keys) to read them from (:meth:`MethodOptions.from_config`).
    key: PRNG key of the members' initialisation.

  Raises:
    ValueError: an unknown method, or one the backbone cannot run (names the config key).
  """
  if not isinstance(options, MethodOptions):
    options = MethodOptions.from_config(options)
  return get(method).build(backbone, options, key)


__all__ = [
    # Building a method.
    'build', 'get', 'METHODS', 'REGISTRY',
    # Its records.
    'FeaturesForward', 'Forward', 'Method', 'MethodOptions', 'MethodSetup',
    # A posterior fitted after training.
    'Posterior', 'PosteriorData',
]
