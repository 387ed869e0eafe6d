"""The explicit deep ensemble (``deep_ensemble``): M independently fine-tuned full models.

Every member starts from the same pretrained backbone with its own fresh head
(``N(0, 0.01²)`` from its own key, bias 0), keeps its own dropout masks, and is trained on its
own batch stream (seed ``config.seed + m``: its own data order), as separate runs would be;
all M are trained in one vmapped step (:attr:`base.MethodSetup.per_member_data`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax

from sve_jax.methods import base
from sve_jax.methods import single_ft

if TYPE_CHECKING:
  from sve_jax.models import Backbone


def build(backbone: Backbone, options: base.MethodOptions, key: jax.Array) -> base.MethodSetup:
  """``options.num_members`` full copies of the backbone."""
  return single_ft.full_copies('deep_ensemble', backbone, key, int(options.num_members),
                               per_member_data=True)


METHOD = base.Method('deep_ensemble', build, adapts_by_rules=False,
                     learning_rate_key=base.FULL_FINETUNE_LEARNING_RATE)
