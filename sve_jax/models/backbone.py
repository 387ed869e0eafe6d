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
    num_blocks: ``L``, the blocks of the backbone's stack (transformer layers), or ``None``
      for a backbone without one (EfficientNet).
    keep_top_blocks: ``(backbone, first_block) -> backbone`` whose methods adapt only the
      blocks from ``first_block`` up (:func:`adapt_top_blocks`); ``None`` without a stack.
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
  num_blocks: int | None = None
  keep_top_blocks: Callable[[Backbone, int], Backbone] | None = None

  def apply(self, params: PyTree, inputs: Any, *, train: bool = False,
            rngs: Mapping[str, jax.Array] | None = None) -> jax.Array:
    """The pure forward ``(params, inputs) -> logits``.

    Inputs holding ``class_mask.KEY`` (multiple choice: the classes each example offers)
    get the logits of the other classes set to ``class_mask.ABSENT_LOGIT``; the module itself
    never sees the mask, so every backbone and method honours it.
    """
    inputs, mask = class_mask.split_inputs(inputs)
    inputs, method = _entry(inputs)
    logits = self.module.apply({'params': params}, inputs, method=method, train=train,
                               rngs=rngs)
    return class_mask.mask_logits(logits, mask)

  def apply_trunk(self, params: PyTree, inputs: Any) -> dict[str, jax.Array]:
    """The trunk's output on ``inputs``, deterministic: the states after the blocks that
    :func:`adapt_top_blocks` left pretrained, per example (e.g. ``{'hidden': (B, T, D),
    'attention_mask': (B, T)}``). :meth:`apply` on ``{TRUNK_STATE: that}`` runs the rest.
    """
    inputs, _ = class_mask.split_inputs(inputs)
    return self.module.apply({'params': params}, inputs, method='trunk')

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
    inputs, method = _entry(inputs)
    logits, state = self.module.apply({'params': params}, inputs, method=method, train=train,
                                      rngs=rngs, mutable=[FEATURES_COLLECTION])
    sown = state.get(FEATURES_COLLECTION, {}).get(FEATURES_NAME)
    if sown is None:
      raise ValueError(f'the {self.name} backbone module sows no pooled features; call '
                       'sve_jax.models.backbone.sow_features(self, x) before its head')
    return logits, sown[-1]


#: The input key of a batch that carries the trunk's outputs instead of raw inputs
#: (:meth:`Backbone.apply_trunk`; :mod:`sve_jax.train.trunk_cache`): the module then runs
#: only its top blocks (its ``top`` method).
TRUNK_STATE = 'trunk_state'


def _entry(inputs: Any) -> tuple[Any, str | None]:
  """``(module inputs, module method)``: a trunk's outputs go to the module's ``top``,
  anything else to its ``__call__``."""
  if isinstance(inputs, Mapping) and TRUNK_STATE in inputs:
    return inputs[TRUNK_STATE], 'top'
  return inputs, None


def adapt_top_blocks(backbone: Backbone, adapted_blocks: int) -> Backbone:
  """The backbone whose methods adapt only its top ``K = adapted_blocks`` blocks.

  The lower ``L - K`` blocks (the trunk) keep their pretrained weights: no method decomposes,
  adapts or trains them, so they are the same for every member. Member-vmapped forwards
  (:func:`sve_jax.ensemble.vmap_members`) then run them once per batch, not once per member,
  and no backward pass reaches below block ``L - K``: an input costs ``(L - K) + M·K``
  blocks instead of ``M·L``.

  Args:
    backbone: as a loader returns it.
    adapted_blocks: ``K``; ``-1`` (or ``L``) adapts every block, the paper's SVE.

  Returns:
    ``backbone`` itself for ``-1`` or ``L``; otherwise the result of its
    :attr:`Backbone.keep_top_blocks`: rules that freeze the trunk's leaves, and, for a
    scanned stack (llama), the scan split into a trunk scan and a top scan.

  Raises:
    ValueError: ``K`` is 0, below -1 or above ``L``, or the backbone has no block stack
      (names ``config.model.adapted_blocks``).
  """
  k = int(adapted_blocks)
  if k == -1:
    return backbone
  if backbone.num_blocks is None or backbone.keep_top_blocks is None:
    raise ValueError(f'config.model.adapted_blocks={k}: the {backbone.name} backbone has no '
                     'stack of transformer blocks to adapt the top of; use -1 (all)')
  if not 1 <= k <= backbone.num_blocks:
    raise ValueError(f'config.model.adapted_blocks={k} must be -1 (all) or in [1, '
                     f'{backbone.num_blocks}], the {backbone.name} backbone\'s blocks')
  if k == backbone.num_blocks:
    return backbone
  return backbone.keep_top_blocks(backbone, backbone.num_blocks - k)


def freeze_lower_blocks(block_pattern: str) -> Callable[[Backbone, int], Backbone]:
  """:attr:`Backbone.keep_top_blocks` of a backbone whose blocks have params of their own
  (``encoder/layer_3/...``, ``blocks_3/...``): its ``rules`` and ``attention_rules``
  restricted by :func:`sve_jax.layout.freeze_blocks_below`, and its module's
  ``num_trunk_blocks`` set (where its ``trunk`` method stops and ``top`` starts).

  Args:
    block_pattern: a regex whose first group captures the block index in a param path.
  """

  def keep_top_blocks(backbone: Backbone, first_block: int) -> Backbone:
    restrict = lambda rules: (None if rules is None else
                              layout.freeze_blocks_below(rules, block_pattern, first_block))
    return dataclasses.replace(backbone, rules=restrict(backbone.rules),
                               attention_rules=restrict(backbone.attention_rules),
                               module=backbone.module.clone(num_trunk_blocks=first_block))

  return keep_top_blocks


def dropout_override(model: Mapping[str, Any]) -> float | None:
  """``config.model.dropout_rate`` as the rate for every dropout of the backbone, or ``None``
  (-1 or absent) to keep the checkpoint's or preset's own."""
  rate = float(model.get('dropout_rate', -1.))
  return rate if rate >= 0 else None


def square_image_size(model: Mapping[str, Any]) -> tuple[int, int]:
  """``config.model.image_size`` as the ``(height, width)`` an image backbone runs at."""
  return (int(model['image_size']),) * 2
