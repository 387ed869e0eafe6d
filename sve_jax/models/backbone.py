"""What every backbone loader returns, and what the loaders share.

A loader (``from_config`` in :mod:`~sve_jax.models.bert`, :mod:`~sve_jax.models.vit` and
:mod:`~sve_jax.models.efficientnet_lite`) takes a config's ``model`` section and the number
of classes and returns a :class:`Backbone`. Every backbone gets a fresh task head named
``head``, initialised at zero (:data:`HEAD_INIT`) and trained per member (:data:`HEAD_RULE`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np

from sve_jax import class_mask
from sve_jax import layout
from sve_jax.tree import PyTree

#: A fresh task head starts at zero; SVE's per-member noise then makes the members' heads
#: differ (N(0, σ²) weights).
HEAD_INIT = nn.initializers.zeros

#: The SVE rule of the task head: its kernel and bias are trained per member.
HEAD_RULE = layout.HEAD_RULE

#: The flax collection, and the name in it, under which every backbone module sows the pooled
#: features its head reads (:func:`sow_features`). Sowing into a collection that is not
#: mutable is a no-op, so a plain ``apply`` computes nothing more.
FEATURES_COLLECTION = 'features'
FEATURES_NAME = 'head_input'


def sow_features(module: nn.Module, features: jax.Array) -> None:
  """Records ``features`` ``(B, D)``, the input of ``module``'s head, for
  :meth:`Backbone.apply_with_features` (nothing unless that collection is mutable)."""
  module.sow(FEATURES_COLLECTION, FEATURES_NAME, features)


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A pretrained model ready for SVE.

  Attributes:
    name: one of ``sve_jax.models.BACKBONES``.
    module: the Flax linen module (with a zero-initialised ``head``).
    params: its params, pretrained weights plus the new head.
    rules: the backbone's ``SVE_RULES`` for :func:`sve_jax.decompose`.
    modality: ``'text'`` or ``'image'``.
    tokenize: text backbones: ``list[str] -> {input_ids, attention_mask, token_type_ids}``.
    image_size: image backbones: input ``(height, width)``.
    image_mean, image_std: image backbones: per-channel statistics on the [0, 1] scale.
    attention_rules: the backbone's ``ATTENTION_RULES`` (SVE rules restricted to the attention
      q, k, v, o kernels), or ``None`` for a backbone without attention.
    dropout_rate: the largest dropout rate :meth:`apply` uses with ``train=True``.
    statistics: regexes over '/'-joined param paths of leaves that are statistics, not
      weights (batch norm's running mean and variance): no method trains them.
  """
  name: str
  module: Any
  params: PyTree
  rules: tuple
  modality: str
  tokenize: Callable[[list[str]], dict[str, np.ndarray]] | None = None
  image_size: tuple[int, int] | None = None
  image_mean: tuple[float, ...] | None = None
  image_std: tuple[float, ...] | None = None
  attention_rules: tuple | None = None
  dropout_rate: float = 0.
  statistics: tuple[str, ...] = ()

  def apply(self, params: PyTree, inputs: Any, *, train: bool = False,
            rngs: Mapping[str, jax.Array] | None = None) -> jax.Array:
    """The pure forward ``(params, inputs) -> logits``.

    Inputs holding ``class_mask.KEY`` (multiple choice: the classes each example offers)
    get the logits of the other classes set to ``class_mask.ABSENT_LOGIT``; the module itself
    never sees the mask, so every backbone and method honours it.
    """
    inputs, mask = class_mask.split_inputs(inputs)
    logits = self.module.apply({'params': params}, inputs, train=train, rngs=rngs)
    return class_mask.mask_logits(logits, mask)

  def apply_with_features(self, params: PyTree, inputs: Any, *, train: bool = False,
                          rngs: Mapping[str, jax.Array] | None = None
                          ) -> tuple[jax.Array, jax.Array]:
    """:meth:`apply` that also returns the pooled features its head reads:
    ``(logits (B, C), features (B, D))``, from the same forward pass.

    The features are what the module sows (:func:`sow_features`): the pooled encoder output
    before the head's dropout (BERT, ViT, EfficientNet), or a decoder's final hidden state at
    each row's last prompt token (llama).

    Raises:
      ValueError: the module sows no features.
    """
    logits, state = self.module.apply({'params': params}, inputs, train=train, rngs=rngs,
                                      mutable=[FEATURES_COLLECTION])
    sown = state.get(FEATURES_COLLECTION, {}).get(FEATURES_NAME)
    if sown is None:
      raise ValueError(f'the {self.name} backbone module sows no pooled features; call '
                       'sve_jax.models.backbone.sow_features(self, x) before its head')
    return logits, sown[-1]


def dropout_override(model: Mapping[str, Any]) -> float | None:
  """``config.model.dropout_rate`` as the rate for every dropout of the backbone, or ``None``
  (-1 or absent) to keep the checkpoint's or preset's own."""
  rate = float(model.get('dropout_rate', -1.))
  return rate if rate >= 0 else None


def square_image_size(model: Mapping[str, Any]) -> tuple[int, int]:
  """``config.model.image_size`` as the ``(height, width)`` an image backbone runs at."""
  return (int(model['image_size']),) * 2
