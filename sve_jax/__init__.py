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

One module per concept: :mod:`sve_jax.layout` (which leaves are decomposed, trained per
member or frozen, and a kernel's matrix view), :mod:`sve_jax.factorize` (the SVD and its
inverse), :mod:`sve_jax.ensemble` (the member axis), :mod:`sve_jax.execution` (the factored
path), :mod:`sve_jax.tree` ('/'-paths and parameter counts), :mod:`sve_jax.methods` (SVE and
the baselines as training methods).
"""
# Rules and layouts: which leaves SVE decomposes, trains per member or freezes.
from sve_jax.layout import Decompose
from sve_jax.layout import DEFAULT_RULES
from sve_jax.layout import freeze_blocks_below
from sve_jax.layout import LayoutError
# The SVD and its inverse.
from sve_jax.factorize import compose
from sve_jax.factorize import decompose
from sve_jax.factorize import Factored
from sve_jax.factorize import MemberSlot
# The member axis: members, their forward, materialised inference, counts.
from sve_jax.ensemble import count_params
from sve_jax.ensemble import init_members
from sve_jax.ensemble import make_sve_apply
from sve_jax.ensemble import materialize_kernels
from sve_jax.ensemble import materialize_members
from sve_jax.ensemble import member_axis_size
# Execution paths and the ensemble's prediction.
from sve_jax.execution import materialize_pays_off
from sve_jax.execution import member_params
from sve_jax.execution import prefer_factored
from sve_jax.ensemble import ensemble_probs

__all__ = [
    # Rules and layouts.
    'Decompose', 'DEFAULT_RULES', 'freeze_blocks_below', 'LayoutError',
    # The SVD.
    'compose', 'decompose', 'Factored', 'MemberSlot',
    # The member axis.
    'count_params', 'init_members', 'make_sve_apply', 'materialize_kernels',
    'materialize_members', 'materialize_pays_off', 'member_axis_size', 'member_params',
    # Execution and prediction.
    'ensemble_probs', 'prefer_factored',
]
