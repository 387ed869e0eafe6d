"""sve_jax: Singular Value Ensembles for pretrained Flax models.

The public API::

  frozen, s = sve_jax.decompose(params, rules=None)
  trainables = sve_jax.init_members(key, frozen, s, num_members, noise_std=0.01)
  sve_apply = sve_jax.make_sve_apply(apply_fn)        # -> per-member outputs (M, ...)
  member_logits = sve_apply({'frozen': frozen, 'trainables': trainables}, x)
  probs = sve_jax.ensemble_probs(member_logits)      # mean of member probabilities
  params_m = sve_jax.compose(frozen, s_m)
  stacked = sve_jax.materialize_members(frozen, trainables)   # (M, ...) params, inference
  frozen_m, trainables_m = sve_jax.materialize_kernels(frozen, trainables)  # kernels once
  sve_jax.count_params(frozen, trainables)
"""
from sve_jax.ensemble import count_params
from sve_jax.ensemble import init_members
from sve_jax.ensemble import make_sve_apply
from sve_jax.ensemble import materialize_kernels
from sve_jax.ensemble import materialize_members
from sve_jax.ensemble import materialize_pays_off
from sve_jax.ensemble import member_params
from sve_jax.ensemble import num_members
from sve_jax.execution import prefer_factored
from sve_jax.eval.metrics import ensemble_probs
from sve_jax.factorize import compose
from sve_jax.factorize import decompose
from sve_jax.factorize import Decompose
from sve_jax.factorize import DEFAULT_RULES
from sve_jax.factorize import Factored
from sve_jax.factorize import LayoutError
from sve_jax.factorize import MemberSlot

__all__ = [
    'compose', 'count_params', 'decompose', 'Decompose', 'DEFAULT_RULES', 'ensemble_probs',
    'Factored', 'init_members', 'LayoutError', 'make_sve_apply', 'materialize_kernels',
    'materialize_members', 'materialize_pays_off', 'member_params', 'MemberSlot', 'num_members', 'prefer_factored',
]
