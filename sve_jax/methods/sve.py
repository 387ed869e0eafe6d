"""SVE and its single-model variant (``single_svf``: singular-value fine-tuning, M = 1).

Member ``m`` is ``W_m = U diag(s_m) Vᵀ`` on every kernel the backbone's SVE rules decompose,
plus its own biases and head (DESIGN.md §1). Its forward is
:func:`sve_jax.make_sve_apply`, so ``config.execution`` (compose / factored / auto) applies.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax

import sve_jax
from sve_jax.train import steps
from sve_jax.methods import base


def build(name: str, backbone, config: Mapping[str, Any], key: jax.Array,
          num_members: int) -> base.Setup:
  """SVE with ``num_members`` members, initialised with ``config.noise_std``.

  Optional config fields (absent = the paper's defaults):
    head_init_std: ``>= 0`` draws each member's head afresh, kernel ``N(0, head_init_std²)``
      and bias 0 (:func:`base.init_heads`), apart from the singular values' ``noise_std``;
      ``-1`` keeps the head tied to ``noise_std`` (:func:`sve_jax.init_members`).
    member_data_order: member ``m`` trains on its own batch stream
      (:attr:`base.Setup.per_member_data`).
  """
  frozen, s = sve_jax.decompose(backbone.params, rules=backbone.rules)
  trainables = sve_jax.init_members(key, frozen, s, num_members, config['noise_std'])
  head_init_std = float(config.get('head_init_std', -1.))
  if head_init_std >= 0:
    heads = base.init_heads(jax.random.fold_in(key, 1), base.head_of(backbone.params, name),
                            num_members, head_init_std)
    trainables = {**trainables, 'head': heads}
  per_member_data = bool(config.get('member_data_order', False))
  sve_apply = sve_jax.make_sve_apply(backbone.apply, execution=config['execution'])
  # Training differentiates the forward: 'auto' then costs the backward pass as well.
  train_apply = sve_jax.make_sve_apply(backbone.apply, execution=config['execution'],
                                       per_member_args=per_member_data, training=True)
  counts = sve_jax.count_params(frozen, trainables)
  return base.Setup(name, frozen, trainables, steps.sve_forward(sve_apply, train_apply),
                    counts['backbone'], counts['trainable_per_member'],
                    per_member_data=per_member_data, pretrained_s=s)
