"""Full fine-tuning (``single_ft``, M = 1) and the mechanism the explicit ensembles share.

Every backbone weight is trainable. Only the backbone's statistics stay frozen
(:attr:`sve_jax.models.Backbone.statistics`: batch norm's running mean and variance, which
a gradient step would corrupt: AdamW can push a variance below zero). The fresh head is
drawn ``N(0, 0.01²)`` (bias 0) per member from the member's own key
(:func:`base.init_heads`). Training uses the backbone's dropout (``config.model.dropout_rate``,
default the checkpoint's own).
"""
from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

import jax

from sve_jax import tree as tree_lib
from sve_jax.methods import base
from sve_jax.tree import PyTree

if TYPE_CHECKING:
  from sve_jax.models import Backbone


def member_params(frozen: PyTree, t_m: PyTree) -> PyTree:
  """A member's params: its trainables, with the frozen statistics (if any) put back."""
  if not frozen:
    return t_m
  return tree_lib.nest({**tree_lib.flatten_paths(frozen), **tree_lib.flatten_paths(t_m)})


def _split_statistics(backbone: Backbone) -> tuple[dict, dict]:
  """``(statistics, weights)``: the backbone's params split by ``backbone.statistics``."""
  flat = tree_lib.flatten_paths(backbone.params)
  is_statistic = {path: any(re.search(rule, '/'.join(path)) for rule in backbone.statistics)
                  for path in flat}
  return (tree_lib.nest({p: v for p, v in flat.items() if is_statistic[p]}),
          tree_lib.nest({p: v for p, v in flat.items() if not is_statistic[p]}))


def full_copies(name: str, backbone: Backbone, key: jax.Array, num_members: int,
                per_member_data: bool = False) -> base.MethodSetup:
  """``num_members`` fully trainable copies of the backbone, each with its own fresh head.

  Args:
    name: the method.
    backbone: a :class:`sve_jax.models.Backbone`; its top-level ``head``, if any, is drawn
      afresh per member (a decoder's shared LM head is simply one more trained weight).
    key: PRNG key of the heads.
    num_members: M.
    per_member_data: see :attr:`base.MethodSetup.per_member_data`.
  """
  statistics, params = _split_statistics(backbone)
  trainables = {**base.identical_copies(params, num_members),
                **base.member_heads(key, params, num_members)}
  return base.make_setup(name, backbone, statistics, trainables,
                         functools.partial(base.vmap_forward, member_params=member_params,
                                           per_member_data=per_member_data),
                         per_member_data=per_member_data)


def build(backbone: Backbone, options: base.MethodOptions, key: jax.Array) -> base.MethodSetup:
  """One fully fine-tuned model."""
  del options
  return full_copies('single_ft', backbone, key, 1)


METHOD = base.Method('single_ft', build, reports_ensemble=False, trains_ensemble=False,
                     adapts_by_rules=False,
                     learning_rate_key=base.FULL_FINETUNE_LEARNING_RATE)
