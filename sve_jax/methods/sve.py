"""SVE as a training method (``sve``), and its single model (``single_svf``, M = 1).

What member ``m`` trains (``docs/method.md``): on every kernel the backbone's SVE rules
decompose, ``W_m = U diag(max(s_m, 0)) Vᵀ`` with its own singular values ``s_m`` (all
``r = min(d_in, d_out)`` of them); and its own copy of every leaf the rules mark ``'member'``
(the biases of those layers, the head). U, Vᵀ and every other leaf are frozen and shared.
``single_svf`` is the same with one member: singular-value fine-tuning.

Initialisation (:func:`sve_jax.init_members`): ``s_m = max(s ⊙ (1 + ε_m), 0)`` with
``ε_m ~ N(0, noise_std²)``, per-member leaves ``b + noise_std · N(0, 1)``.

Forward: :func:`sve_jax.make_sve_apply` runs the members under one ``jax.vmap``, so
``execution`` (compose / factored / auto) applies; :func:`make_forward` adapts it to the
train step's ``forward(frozen, trainables, inputs, rng, train)``.

Dropout is a choice: with ``sve_dropout=False`` (the default, as the authors' code,
which has none on DINO ViT) the backbone runs deterministically in training too, and the
members differ by their initial noise and what they learn from it. With ``True`` training runs
the backbone's dropout (``backbone.apply(..., train=True)``), every member with its own key
(``jax.random.split(rng, M)[m]``, as the baselines' members); evaluation is deterministic
either way.

The :class:`~sve_jax.methods.base.MethodOptions` it reads (config keys of the same names;
``num_members``, ``noise_std`` and ``execution`` above; the rest default to the paper's):
  head_init_std: ``>= 0`` draws each member's head afresh, kernel ``N(0, head_init_std²)``
    and bias 0 (:func:`base.init_heads`), apart from the singular values' ``noise_std``;
    ``-1`` keeps the head tied to ``noise_std``. A backbone without a fresh head (a decoder
    scoring label tokens with its LM head, shared by every member) has nothing to draw.
  member_data_order: member ``m`` trains on its own batch stream
    (:attr:`base.MethodSetup.per_member_data`).
  sve_dropout: see above.
  sve_targets: ``'all'`` (the backbone's ``rules``) or ``'attention'`` (its
    ``attention_rules``: q, k, v and the attention output; the MLPs stay frozen).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import jax

from sve_jax import choices
from sve_jax import ensemble
from sve_jax import factorize
from sve_jax.methods import base

if TYPE_CHECKING:
  from sve_jax.models import Backbone


def make_forward(sve_apply: Callable[..., jax.Array],
                 train_apply: Callable[..., jax.Array] | None = None, *,
                 dropout: bool = False) -> base.Forward:
  """Adapts ``sve_apply(params, inputs, **kwargs)`` to the train step's forward signature.

  Args:
    sve_apply: from :func:`sve_jax.make_sve_apply`.
    train_apply: replaces ``sve_apply`` in training (``train=True``): e.g. one made with
      ``per_member_args=True`` for member-stacked ``(M, B, ...)`` batches.
    dropout: in training, call the apply with ``train=True, rngs={'dropout': rng}`` (the
      signature of :meth:`sve_jax.models.Backbone.apply`; every member gets its own key).
      Otherwise, and always in evaluation, it is called with the inputs alone.

  Returns:
    ``forward(frozen, trainables, inputs, rng, train) -> (M, B, C)``.
  """

  def forward(frozen, trainables, inputs, rng, train):
    params = {'frozen': frozen, 'trainables': trainables}
    if not train:
      return sve_apply(params, inputs)
    apply = sve_apply if train_apply is None else train_apply
    if dropout:
      return apply(params, inputs, train=True, rngs={'dropout': rng})
    return apply(params, inputs)

  return forward


#: What SVE decomposes (``MethodOptions.sve_targets``): the backbone's ``rules`` or its
#: ``attention_rules``.
SVE_TARGETS = ('all', 'attention')


def check_targets(targets: str, key: str = 'sve_targets') -> None:
  """Raises ValueError naming ``key`` (e.g. ``config.sve_targets``) unless ``targets`` is one
  of :data:`SVE_TARGETS`."""
  choices.check_choice(targets, SVE_TARGETS, key)


def target_rules(backbone: Backbone, targets: str) -> tuple:
  """The rules SVE decomposes ``backbone`` by: ``'all'`` its ``rules``, ``'attention'`` its
  ``attention_rules``.

  Raises:
    ValueError: a value not in :data:`SVE_TARGETS`, or ``'attention'`` on a backbone without
      attention (EfficientNet); the message names ``config.sve_targets``.
  """
  check_targets(targets, 'config.sve_targets')
  if targets == 'all':
    return backbone.rules
  if backbone.attention_rules is None:
    raise ValueError(f"config.sve_targets='attention': the {backbone.name} backbone has no "
                     "attention projections; use 'all'")
  return backbone.attention_rules


def _build(name: str, backbone: Backbone, options: base.MethodOptions, key: jax.Array,
           num_members: int) -> base.MethodSetup:
  """SVE with ``num_members`` members (see the module docstring for the options it reads)."""
  frozen, s = factorize.decompose(backbone.params,
                                  rules=target_rules(backbone, options.sve_targets))
  trainables = ensemble.init_members(key, frozen, s, num_members, options.noise_std)
  head_init_std = float(options.head_init_std)
  if head_init_std >= 0:  # a backbone without a fresh head (a decoder's LM head) has none
    trainables = {**trainables, **base.member_heads(jax.random.fold_in(key, 1),
                                                    backbone.params, num_members,
                                                    head_init_std)}
  per_member_data = bool(options.member_data_order)

  def forward_on(apply_fn):
    sve_apply = ensemble.make_sve_apply(apply_fn, execution=options.execution)
    # Training differentiates the forward: 'auto' then costs the backward pass as well.
    train_apply = ensemble.make_sve_apply(apply_fn, execution=options.execution,
                                          per_member_args=per_member_data, training=True)
    return make_forward(sve_apply, train_apply, dropout=bool(options.sve_dropout))

  return base.make_setup(name, backbone, frozen, trainables, forward_on,
                         per_member_data=per_member_data, pretrained_s=s,
                         dropout_in_training=bool(options.sve_dropout))


def build(backbone: Backbone, options: base.MethodOptions, key: jax.Array) -> base.MethodSetup:
  """SVE with ``options.num_members`` members."""
  return _build('sve', backbone, options, key, int(options.num_members))


def build_single_svf(backbone: Backbone, options: base.MethodOptions,
                     key: jax.Array) -> base.MethodSetup:
  """Singular-value fine-tuning: SVE with one member."""
  return _build('single_svf', backbone, options, key, 1)


METHOD = base.Method('sve', build)
SINGLE_SVF = base.Method('single_svf', build_single_svf, reports_ensemble=False,
                         trains_ensemble=False)
