"""What every method shares: the :class:`Setup`, the vmapped member forward, heads, selection.

A method is a way of turning one backbone into M members. Apart from SVE (which keeps its own
:func:`sve_jax.make_sve_apply`), each method only says how member ``m``'s ordinary params are
made from the shared ``frozen`` tree and its own slice ``t_m`` of the trainables::

  member_params(frozen, t_m) -> params        # params for backbone.apply

and :func:`vmap_forward` runs all members with one ``jax.vmap``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from sve_jax import ensemble
from sve_jax import factorize
from sve_jax.train import steps
from sve_jax.train.state import tree_size

PyTree = Any
Path = tuple[str, ...]
MemberParams = Callable[[PyTree, PyTree], PyTree]

#: Standard deviation of the fresh per-member heads of the baselines (DESIGN.md §1: the
#: paper's head initialisation, weights ``N(0, 0.01²)``, bias 0).
HEAD_STD = 0.01


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a method trains and how it runs.

  Attributes:
    name: the method.
    frozen: shared, never-updated leaves (for SVE: U, Vᵀ, embeddings, norms).
    trainables: per-member leaves with a leading member axis.
    forward: ``(frozen, trainables, inputs, rng, train) -> (M, B, C)`` logits.
    backbone_params: parameters of the pretrained backbone, head included.
    trainable_per_member: trainable parameters of one member.
    per_member_data: whether training feeds member ``m`` its own batch: then inputs are
      ``(M, B, ...)`` and labels ``(M, B)`` with ``train=True``; evaluation always feeds every
      member the same ``(B, ...)`` inputs.
    pretrained_s: SVE only: the pretrained singular values and per-member leaves (the ``s``
      of :func:`sve_jax.decompose`), to measure how far training moved the members.
  """
  name: str
  frozen: PyTree
  trainables: PyTree
  forward: steps.Forward
  backbone_params: int
  trainable_per_member: int
  per_member_data: bool = False
  pretrained_s: PyTree | None = None

  @property
  def trainable_total(self) -> int:
    """Trainable parameters of the whole ensemble (all copies in ``trainables``)."""
    return tree_size(self.trainables)


def make_setup(name: str, backbone, frozen: PyTree, trainables: PyTree,
               forward: steps.Forward, per_member_data: bool = False) -> Setup:
  """A :class:`Setup` whose counts come from ``backbone.params`` and ``trainables``."""
  return Setup(name, frozen, trainables, forward, tree_size(backbone.params),
               tree_size(trainables) // ensemble.num_members(trainables), per_member_data)


# --------------------------------------------------------------------------------------------
# The forward.
# --------------------------------------------------------------------------------------------


def vmap_forward(apply_fn: Callable[..., jax.Array], member_params: MemberParams, *,
                 per_member_data: bool = False) -> steps.Forward:
  """Runs every member under one ``jax.vmap``.

  Member ``m`` computes ``apply_fn(member_params(frozen, trainables[m]), inputs_m,
  train=train, rngs={'dropout': rng_m})`` with ``rng_m = jax.random.split(rng, M)[m]`` (its
  own dropout masks) and ``inputs_m = inputs[m]`` when ``per_member_data and train``, else the
  shared ``inputs``.

  Args:
    apply_fn: the backbone's ``(params, inputs, *, train, rngs) -> logits``
      (:meth:`sve_jax.models.Backbone.apply`).
    member_params: ``(frozen, t_m) -> params`` for one member.
    per_member_data: whether training inputs carry a leading member axis.

  Returns:
    ``forward(frozen, trainables, inputs, rng, train) -> (M, B, C)``.
  """

  def forward(frozen, trainables, inputs, rng, train):
    rngs = jax.random.split(rng, ensemble.num_members(trainables))

    def one_member(t_m, x, r):
      return apply_fn(member_params(frozen, t_m), x, train=train, rngs={'dropout': r})

    inputs_axis = 0 if per_member_data and train else None
    return jax.vmap(one_member, in_axes=(0, inputs_axis, 0))(trainables, inputs, rngs)

  return forward


# --------------------------------------------------------------------------------------------
# Trees.
# --------------------------------------------------------------------------------------------


def stack_members(tree: PyTree, num_members: int) -> PyTree:
  """``num_members`` identical copies of every leaf along a new leading axis."""
  return jax.tree_util.tree_map(
      lambda x: jnp.broadcast_to(x, (num_members,) + jnp.shape(x)), tree)


def unstack_first(tree: PyTree) -> PyTree:
  """Member 0 of a tree with a leading member axis."""
  return jax.tree_util.tree_map(lambda x: x[0], tree)


def member_keys(key: jax.Array, num_members: int) -> jax.Array:
  """``(M,)`` keys, member ``m``'s being ``jax.random.fold_in(key, m)`` (independent of M)."""
  return jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(num_members))


@functools.partial(jax.jit, static_argnums=(2, 3))
def init_heads(key: jax.Array, head: PyTree, num_members: int,
               std: float = HEAD_STD) -> PyTree:
  """Fresh per-member heads: kernels ``N(0, std²)``, every other leaf (bias) 0.

  Member ``m`` draws from its own key (:func:`member_keys`), so its head does not depend on
  M.

  Args:
    key: PRNG key.
    head: one head's params (leaves named ``kernel`` are drawn, others zeroed).
    num_members: M.
    std: the kernels' standard deviation.

  Returns:
    ``head``'s tree with a leading member axis of size M on every leaf.
  """
  keys = member_keys(key, num_members)
  flat, treedef = jax.tree_util.tree_flatten_with_path(head)
  leaves = []
  for i, (keypath, leaf) in enumerate(flat):
    shape, dtype = jnp.shape(leaf), jnp.asarray(leaf).dtype
    if factorize.keypath_to_path(keypath)[-1] == 'kernel':
      draw = lambda k, i=i, shape=shape, dtype=dtype: std * jax.random.normal(
          jax.random.fold_in(k, i), shape, dtype)
      leaves.append(jax.vmap(draw)(keys))
    else:
      leaves.append(jnp.zeros((num_members,) + shape, dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def head_of(params: Mapping[str, Any], method: str) -> PyTree:
  """The backbone's classification ``head`` subtree (raises if it has none)."""
  if 'head' not in params:
    raise ValueError(f'{method}: the backbone params have no top-level "head" to train per '
                     f'member (top-level keys: {sorted(params)})')
  return params['head']


def replace_leaves(params: PyTree, values: Mapping[Path, Any]) -> PyTree:
  """``params`` with the leaf at each path of ``values`` replaced by its value.

  Raises:
    KeyError: a path of ``values`` is not a leaf of ``params``.
  """
  known = set(factorize.flatten_paths(params))
  unknown = sorted('/'.join(p) for p in set(values) - known)
  if unknown:
    raise KeyError(f'no such params leaves: {unknown[:5]}')
  return jax.tree_util.tree_map_with_path(
      lambda kp, leaf: values.get(factorize.keypath_to_path(kp), leaf), params)


def nest(values: Mapping[Path, Any]) -> dict:
  """``{path: value}`` as a nested dict keyed by the path components."""
  tree: dict = {}
  for path, value in values.items():
    factorize.nested_set(tree, path, value)
  return tree


def select(params: PyTree, rules: factorize.Rules
           ) -> tuple[dict[Path, factorize.KernelLayout], list[Path]]:
  """The leaves ``rules`` mark ``'decompose'`` (with their layouts) and ``'member'``.

  Args:
    params: the backbone params.
    rules: SVE rules (see :func:`sve_jax.decompose`); a :class:`sve_jax.Decompose` role gives
      the kernel's layout explicitly, ``'decompose'`` takes the default layout.

  Returns:
    ``({path: KernelLayout}, [member paths])``, in params order.

  Raises:
    LayoutError: a selected kernel does not fit its layout.
  """
  kernels, members = {}, []
  for path, leaf in factorize.flatten_paths(params).items():
    path_str = '/'.join(path)
    role = factorize.resolve_role(path_str, leaf, rules)
    if role == factorize.MEMBER:
      members.append(path)
    elif role != factorize.FROZEN:
      spec = role if isinstance(role, factorize.Decompose) else factorize.Decompose()
      kernels[path] = factorize.make_layout(path_str, leaf, spec)
  return kernels, members


def map_matrices(kernel: jax.Array, layout: factorize.KernelLayout,
                 fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """``fn`` applied to the kernel's ``(*stack, d_in, d_out)`` float32 matrix view.

  The result goes back to the kernel's layout and dtype (conv and DenseGeneral kernels
  included), via :func:`sve_jax.factorize.as_matrices` / ``from_matrices``.
  """
  return factorize.from_matrices(fn(factorize.as_matrices(kernel, layout)), layout)
