"""The member axis: initialising M members, running them with ``jax.vmap``, materialising
their kernels, counting their params, and averaging their predictions.

``trainables`` is the ``s`` tree of :func:`sve_jax.decompose` with a leading member axis ``M``
on every leaf: member ``m``'s singular values and per-member leaves are ``trainables[...][m]``.
(Each baseline's trainables have a leading member axis in the same way.)

:func:`vmap_members` is the one place members run: :func:`make_sve_apply` and every
baseline's forward (:func:`sve_jax.methods.base.vmap_forward`) are built on it, so members
read their own params slice, optionally their own inputs, and their own random keys alike.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from sve_jax import choices
from sve_jax import execution as execution_lib
from sve_jax import factorize
from sve_jax import tree as tree_lib
from sve_jax.tree import PyTree

#: ``(frozen, t_m) -> params``: member ``m``'s ordinary params for the backbone, from the shared
#: ``frozen`` tree and its own slice ``t_m`` of the trainables. Every method (SVE's is
#: :func:`sve_jax.execution.member_params`) describes its members this way.
MemberParams = Callable[[PyTree, PyTree], PyTree]


def init_members(key: jax.Array, frozen: PyTree, s: Mapping, num_members: int,
                 noise_std: float = 0.01) -> dict:
  """Stacks ``s`` into ``num_members`` members with the method's initial noise.

  * Singular values: ``s_m = max(s ⊙ (1 + ε_m), 0)``, ``ε_m ~ N(0, noise_std²)``.
  * Per-member leaves (biases, heads): ``b_m = b + noise_std · N(0, 1)``. A head initialised
    at zero thus starts at ``N(0, noise_std²)``, the paper's head initialisation.

  Args:
    key: PRNG key.
    frozen: first output of :func:`sve_jax.decompose`.
    s: second output of :func:`sve_jax.decompose`.
    num_members: ``M >= 1``.
    noise_std: σ_init; 0 makes every member exactly the pretrained model.

  Returns:
    The trainables: ``s``'s tree with a leading axis of size ``M`` on every leaf.
  """
  if int(num_members) < 1:
    raise ValueError(f'num_members must be >= 1, got {num_members}')
  if noise_std < 0:
    raise ValueError(f'noise_std must be >= 0, got {noise_std}')
  return _init_members(key, frozen, s, int(num_members), noise_std)


@functools.partial(jax.jit, static_argnums=(3,))
def _init_members(key, frozen, s, num_members, noise_std):
  flat, treedef = jax.tree_util.tree_flatten_with_path(s)
  singular = factorize.factored_paths(frozen)
  sizes = [int(np.size(value)) for _, value in flat]
  # One draw for every leaf: a single threefry call compiles far faster than one per shape.
  eps_all = jax.random.normal(key, (num_members, max(1, sum(sizes))), jnp.float32)
  offsets = np.cumsum([0] + sizes)
  leaves = []
  for (keypath, value), start, size in zip(flat, offsets, sizes):
    value = jnp.asarray(value)
    eps = eps_all[:, start:start + size].reshape((num_members,) + value.shape)
    if tree_lib.keypath_to_path(keypath) in singular:
      leaves.append(jnp.maximum(value * (1. + noise_std * eps), 0.))
    else:
      leaves.append((value.astype(jnp.float32) + noise_std * eps).astype(value.dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def vmap_members(apply_fn: Callable[..., Any], member_params_fn: MemberParams, *,
                 per_member_args: bool = False, member_axis_name: str | None = None
                 ) -> Callable[..., Any]:
  """Runs every member of an ensemble under one ``jax.vmap``: the member axis of a forward.

  Args:
    apply_fn: the backbone's pure forward ``apply_fn(params, *args, **kwargs)``.
    member_params_fn: how member ``m``'s params are made (:data:`MemberParams`).
    per_member_args: every positional ``arg`` carries a leading member axis ``M`` and member
      ``m`` reads its own slice (e.g. its own training batch); by default all members share
      the same ``args``.
    member_axis_name: optional ``jax.vmap`` axis name for the member axis (collectives).

  Returns:
    ``run(frozen, trainables, *args, rngs=None, **kwargs)`` with a leading member axis ``M``
    on its outputs. Member ``m`` computes ``apply_fn(member_params_fn(frozen,
    trainables[m]), *args, **kwargs)``; ``rngs``, flax's ``{name: key}`` (e.g.
    ``{'dropout': key}``), reaches it as ``{name: jax.random.split(key, M)[m]}``, so every
    member draws its own randomness (dropout masks). Without ``rngs`` none is passed.
  """

  def run(frozen, trainables, *args, rngs=None, **kwargs):
    member_rngs = None if rngs is None else {
        name: jax.random.split(key, member_axis_size(trainables)) for name, key in rngs.items()}

    def one_member(t_m, member_args, rngs_m):
      extra = {} if rngs_m is None else {'rngs': rngs_m}
      return apply_fn(member_params_fn(frozen, t_m), *member_args, **kwargs, **extra)

    return jax.vmap(one_member, in_axes=(0, 0 if per_member_args else None, 0),
                    axis_name=member_axis_name)(trainables, args, member_rngs)

  return run


def make_sve_apply(apply_fn: Callable[..., Any], execution: str = 'compose',
                   member_axis_name: str | None = None,
                   per_member_args: bool = False, training: bool = False
                   ) -> Callable[..., Any]:
  """Turns a backbone's ``apply_fn(params, *args)`` into the ensemble's ``sve_apply``.

  Args:
    apply_fn: the backbone's pure forward, e.g.
      ``lambda p, x: model.apply({'params': p}, x)``.
    execution: ``'compose'`` materialises each member's kernels (any framework);
      ``'factored'`` computes ``((x·U) ⊙ s_m)·Vᵀ`` in linen Dense/DenseGeneral/Conv layers;
      ``'auto'`` picks per layer and call by :func:`sve_jax.execution.prefer_factored`.
    member_axis_name: optional ``jax.vmap`` axis name for the member axis (collectives).
    per_member_args: every positional ``arg`` carries a leading member axis ``M`` and member
      ``m`` reads its own slice (e.g. its own training batch); by default all members share
      the same ``args``.
    training: the result will be differentiated (a train step): ``'auto'`` then counts the
      backward pass in its cost model. Results are the same either way; only speed differs.

  Returns:
    ``sve_apply(params, *args, **kwargs)`` with ``params = {'frozen': ..., 'trainables': ...}``,
    returning ``apply_fn``'s outputs with a leading member axis ``M``; members run under one
    ``jax.vmap`` (no Python loop, :func:`vmap_members`). Keyword arguments reach
    ``apply_fn`` as given (e.g. ``train=True``), except ``rngs={'dropout': key}``, which is
    split so that every member gets its own key.
  """
  execution_lib.check_execution(execution)

  def apply_member(p, *args, **kwargs):
    if execution == 'compose':
      return apply_fn(p, *args, **kwargs)
    with execution_lib.intercept(execution, training):
      return apply_fn(p, *args, **kwargs)

  members = vmap_members(apply_member, functools.partial(execution_lib.member_params,
                                                            execution=execution),
                         per_member_args=per_member_args, member_axis_name=member_axis_name)

  def sve_apply(params, *args, **kwargs):
    frozen, trainables = params['frozen'], params['trainables']
    if not jax.tree_util.tree_leaves(trainables):
      raise ValueError('trainables are empty: the rules selected no leaf to decompose or to '
                       'train per member')
    return members(frozen, trainables, *args, **kwargs)

  return sve_apply


@jax.jit
def materialize_members(frozen: PyTree, trainables: PyTree) -> PyTree:
  """Every member's ordinary params, stacked on a leading member axis ``M``.

  ``sve_apply`` rebuilds (compose) or factors every kernel on each call, which is what
  training needs. For repeated inference, composing each ``W_m = U diag(s_m) Vᵀ`` once and
  running the plain backbone is cheaper per call::

    stacked = sve_jax.materialize_members(frozen, trainables)
    member_logits = jax.vmap(apply_fn, in_axes=(0, None))(stacked, x)   # == sve_apply

  The price is a deep ensemble's memory: every leaf, shared ones included, has ``M`` copies.

  Args:
    frozen: first output of :func:`sve_jax.decompose`.
    trainables: the members (leading axis ``M`` on every leaf).

  Returns:
    The original params' tree with a leading axis ``M`` on every leaf; slice ``m`` equals
    ``sve_jax.compose(frozen, trainables[m])``.
  """
  # vmap gives every output the member axis, broadcasting the leaves no member changes.
  return jax.vmap(lambda s_m: factorize.compose(frozen, s_m))(trainables)


def materialize_kernels(frozen: PyTree, trainables: PyTree) -> tuple[PyTree, dict]:
  """Composes every member's kernels once, as an equivalent ``(frozen, trainables)`` pair.

  Each decomposed kernel becomes a per-member leaf holding ``W_m = U diag(max(s_m, 0)) Vᵀ``;
  every other leaf is unchanged, and shared leaves stay shared (unlike
  :func:`materialize_members`, which stacks them too). ``sve_apply`` on the result equals
  ``sve_apply`` on the inputs, with nothing composed or factored per call: the cheaper way to
  evaluate many batches (:func:`sve_jax.execution.materialize_pays_off`).

  Returns:
    ``(frozen', trainables')``: ``frozen`` with each :class:`~sve_jax.factorize.Factored`
    node replaced by a :class:`~sve_jax.factorize.MemberSlot`, and ``trainables`` with each
    kernel's singular values replaced by its ``(M, *kernel shape)`` composed kernels.
  """
  kernels = factorize.factored_nodes(frozen)

  def slot(node):
    if isinstance(node, factorize.Factored):
      lay = node.layout
      return factorize.MemberSlot(lay.path, lay.shape, lay.dtype)
    return node

  def compose_kernel(keypath, values):
    node = kernels.get(tree_lib.keypath_to_path(keypath))
    if node is None:
      return values
    return jax.vmap(lambda s_m: factorize.reconstruct(node, s_m))(values)

  frozen_m = jax.tree_util.tree_map(slot, frozen, is_leaf=factorize.is_sve_node)
  return frozen_m, jax.tree_util.tree_map_with_path(compose_kernel, trainables)


#: How member predictions are averaged (:func:`ensemble_probs`).
ENSEMBLE_MODES = ('probs', 'logits')


# --------------------------------------------------------------------------------------------
# The ensemble's prediction.
# --------------------------------------------------------------------------------------------


def member_probs(member_logits: jax.typing.ArrayLike,
                 temperature: jax.typing.ArrayLike = 1.) -> jax.Array:
  """Each member's predictive distribution ``softmax(z_m / T)``.

  Args:
    member_logits: ``(M, N, C)`` (any leading shape works).
    temperature: T > 0; divides every member's logits before the softmax.

  Returns:
    Probabilities with the shape of ``member_logits``.
  """
  return jax.nn.softmax(jnp.asarray(member_logits) / temperature, axis=-1)


def ensemble_probs(member_logits: jax.typing.ArrayLike,
                   mode: str = 'probs',
                   temperature: jax.typing.ArrayLike = 1.) -> jax.Array:
  """The ensemble's predictive distribution; the one place it is computed.

  * ``mode='probs'`` (default, as in the paper): ``p̄ = (1/M) Σ_m softmax(z_m / T)``.
  * ``mode='logits'`` (the authors' minimal release): ``p̄ = softmax((1/M) Σ_m z_m / T)``.

  Args:
    member_logits: ``(M, N, C)``.
    mode: ``'probs'`` or ``'logits'``; static under ``jax.jit``.
    temperature: T > 0, applied to every member's logits.

  Returns:
    ``(N, C)`` probabilities.
  """
  check_ensemble_mode(mode)
  member_logits = jnp.asarray(member_logits)
  if mode == 'probs':
    return jnp.mean(member_probs(member_logits, temperature), axis=0)
  return jax.nn.softmax(jnp.mean(member_logits, axis=0) / temperature, axis=-1)


def check_ensemble_mode(mode: str, key: str = 'mode') -> None:
  """Raises ValueError naming ``key`` (e.g. ``config.ensemble_mode``) unless ``mode`` is one
  of :data:`ENSEMBLE_MODES`."""
  choices.check_choice(mode, ENSEMBLE_MODES, key)


def member_axis_size(trainables: PyTree) -> int:
  """M, the size of the trainables' leading axis (checked to be the same on every leaf)."""
  sizes = {int(x.shape[0]) for x in jax.tree_util.tree_leaves(trainables)}
  if len(sizes) != 1:
    raise ValueError(f'trainables have inconsistent member axes: sizes {sorted(sizes)}')
  return sizes.pop()


def count_params(frozen: PyTree, trainables: PyTree) -> dict[str, float]:
  """Parameter accounting of an SVE model.

  With ``N_backbone`` the number of entries of the original params (every kernel counted at
  its full ``d_in·d_out`` size), ``r_ℓ = min(d_in, d_out)`` per decomposed matrix ℓ and
  ``|b_j|`` the size of each per-member leaf j::

    trainable_per_member = Σ_ℓ r_ℓ + Σ_j |b_j|
    trainable_total      = M · trainable_per_member
    overhead             = trainable_total / N_backbone

  ``frozen_factors`` counts the entries of the stored U and Vᵀ, ``Σ_ℓ r_ℓ (d_in + d_out)``.

  Returns:
    dict with ``backbone``, ``trainable_per_member``, ``trainable_total``, ``overhead``,
    ``num_members`` and ``frozen_factors``.
  """
  m = member_axis_size(trainables)
  total = tree_lib.num_params(trainables)
  backbone = tree_lib.num_params(factorize.original_shapes(frozen))
  factors = tree_lib.num_params(list(factorize.factored_nodes(frozen).values()))  # their u and vh
  return dict(backbone=backbone, trainable_per_member=total // m, trainable_total=total,
              overhead=total / backbone, num_members=m, frozen_factors=factors)
