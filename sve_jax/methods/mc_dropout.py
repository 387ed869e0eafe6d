"""MC dropout (``mc_dropout``): one fully fine-tuned model, M dropout samples at test time.

Training is :mod:`single_ft` (dropout on, one model: ``forward(train=True)`` is ``(1, B, C)``).
Evaluation keeps dropout on and draws ``num_members`` samples, one per key of
``jax.random.split(rng, M)``, so a fixed ``rng`` gives reproducible samples
(``forward(train=False)`` is ``(M, B, C)``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax

from sve_jax.methods import base
from sve_jax.methods import single_ft

if TYPE_CHECKING:
  from sve_jax.models import Backbone


def build(backbone: Backbone, options: base.MethodOptions, key: jax.Array) -> base.MethodSetup:
  """One trainable model whose evaluation forward samples ``options.num_members`` masks.

  Raises:
    ValueError: the backbone's dropout rate is 0, so every sample would be the same.
  """
  if not backbone.dropout_rate > 0:
    raise ValueError(
        f'mc_dropout needs dropout, but the {backbone.name} backbone has dropout rate '
        f'{backbone.dropout_rate}; set config.model.dropout_rate to a rate in (0, 1), e.g. 0.1')
  num_samples = int(options.num_members)
  setup = single_ft.full_copies('mc_dropout', backbone, key, 1)

  def forward_on(apply_fn):
    train_forward = base.vmap_forward(apply_fn, single_ft.member_params)

    def forward(frozen, trainables, inputs, rng, train):
      if train:
        return train_forward(frozen, trainables, inputs, rng, True)
      params = single_ft.member_params(frozen, base.unstack_first(trainables))
      sample = lambda r: apply_fn(params, inputs, train=True, rngs={'dropout': r})
      return jax.vmap(sample)(jax.random.split(rng, num_samples))

    return forward

  return base.make_setup('mc_dropout', backbone, setup.frozen, setup.trainables, forward_on)


METHOD = base.Method('mc_dropout', build, adapts_by_rules=False, trains_ensemble=False,
                     learning_rate_key=base.FULL_FINETUNE_LEARNING_RATE)
