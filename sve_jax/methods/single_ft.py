"""Full fine-tuning (``single_ft``, M = 1) and the mechanism the explicit ensembles share.

Every backbone param is trainable; nothing is frozen. The fresh head is drawn ``N(0, 0.01²)``
(bias 0) per member from the member's own key (:func:`base.init_heads`). Training uses the
backbone's dropout (``config.model.dropout_rate``, default the checkpoint's own).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax

from sve_jax.methods import base


def member_params(frozen, t_m):
  """A member's params are its trainables: ``frozen`` is empty."""
  del frozen
  return t_m


def full_copies(name: str, backbone, key: jax.Array, num_members: int,
                per_member_data: bool = False) -> base.Setup:
  """``num_members`` fully trainable copies of the backbone, each with its own fresh head.

  Args:
    name: the method.
    backbone: a :class:`sve_jax.models.Backbone` with a top-level ``head``.
    key: PRNG key of the heads.
    num_members: M.
    per_member_data: see :attr:`base.Setup.per_member_data`.
  """
  params = dict(backbone.params)
  heads = base.init_heads(key, base.head_of(params, name), num_members)
  trainables = {**base.stack_members(params, num_members), 'head': heads}
  forward = base.vmap_forward(backbone.apply, member_params, per_member_data=per_member_data)
  return base.make_setup(name, backbone, {}, trainables, forward, per_member_data)


def build(backbone, config: Mapping[str, Any], key: jax.Array) -> base.Setup:
  """One fully fine-tuned model."""
  del config
  return full_copies('single_ft', backbone, key, 1)


METHOD = base.Method('single_ft', build, reports_ensemble=False, trains_ensemble=False,
                     learning_rate_key=base.FULL_FINETUNE_LEARNING_RATE)
