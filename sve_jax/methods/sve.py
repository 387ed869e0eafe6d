"""SVE and its single-model variant (``single_svf``: singular-value fine-tuning, M = 1).

Member ``m`` is ``W_m = U diag(s_m) Vᵀ`` on every kernel the backbone's SVE rules decompose,
plus its own biases and head (DESIGN.md §1). Its forward is
:func:`sve_jax.make_sve_apply`, so ``config.execution`` (compose / factored / auto) applies.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax

import sve_jax
from sve_jax import steps
from sve_jax.methods import base


def build(name: str, backbone, config: Mapping[str, Any], key: jax.Array,
          num_members: int) -> base.Setup:
  """SVE with ``num_members`` members, initialised with ``config.noise_std``."""
  frozen, s = sve_jax.decompose(backbone.params, rules=backbone.rules)
  trainables = sve_jax.init_members(key, frozen, s, num_members, config['noise_std'])
  sve_apply = sve_jax.make_sve_apply(backbone.apply, execution=config['execution'])
  counts = sve_jax.count_params(frozen, trainables)
  return base.Setup(name, frozen, trainables, steps.sve_forward(sve_apply),
                    counts['backbone'], counts['trainable_per_member'])
