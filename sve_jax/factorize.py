"""Splitting a params pytree into frozen SVD factors and per-member trainables.

Every leaf of a params tree gets one of three roles, decided by rules over its '/'-joined path:

* ``decompose``: the kernel is viewed as a (batch of) matrices ``W: (d_in, d_out)`` and
  factorised once by a thin SVD, ``W = U diag(s) Vᵀ``. U and Vᵀ are frozen and shared;
  ``s`` (all ``min(d_in, d_out)`` singular values, no truncation) becomes trainable.
* ``member``: copied once per ensemble member and trained fully (biases of decomposed layers,
  classification heads).
* ``frozen``: shared and untouched (embeddings, norms, positional tables, ...).

:func:`decompose` returns two pytrees:

``frozen``
  The params tree with the same containers. A frozen leaf is the original array; a decomposed
  leaf is a :class:`Factored` node holding ``u`` and ``vh``; a per-member leaf is an empty
  :class:`MemberSlot` node. Layouts, shapes and dtypes are static aux data of those nodes, so
  ``frozen`` has only arrays as leaves and passes through ``jax.jit``, ``jax.eval_shape`` and
  orbax as it is.
``s``
  A nested dict holding only the trainable base values, keyed by the same path components:
  singular values ``(*stack, r)`` at decomposed leaves and the original value at per-member
  leaves. :func:`sve_jax.init_members` stacks it along a leading member axis.

:func:`compose` is the inverse: ``compose(frozen, s)`` rebuilds an ordinary params tree.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Path = tuple[str, ...]

DECOMPOSE = 'decompose'
MEMBER = 'member'
FROZEN = 'frozen'
_ROLE_NAMES = (DECOMPOSE, MEMBER, FROZEN)


class LayoutError(ValueError):
  """A leaf does not fit the kernel layout a rule assigned to it."""


# --------------------------------------------------------------------------------------------
# Axis specs.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decompose:
  """Role ``decompose`` with an explicit (or partly explicit) kernel layout.

  Axes index the full kernel, stack axes included. Every axis must be exactly one of
  ``stack_axes``, ``in_axes``, ``out_axes``. Left as ``None``, ``in_axes``/``out_axes`` are
  inferred from the leaf's name and rank after removing the stack axes (see
  :func:`default_layout`).

  Attributes:
    in_axes: axes contracted with the layer input (e.g. ``(1,)`` for Gemma's
      ``(heads, embed, head_dim)`` einsum kernels).
    out_axes: axes that index the layer output.
    stack_axes: number of *leading* stack axes (scanned/stacked layers); one SVD per stacked
      matrix, batched.
  """
  in_axes: tuple[int, ...] | None = None
  out_axes: tuple[int, ...] | None = None
  stack_axes: int = 0


@dataclasses.dataclass(frozen=True)
class KernelLayout:
  """How one kernel is viewed as a batch of matrices; static metadata of :class:`Factored`.

  Attributes:
    path: the leaf's '/'-joined path, for error messages.
    shape: the original kernel shape.
    dtype: the original dtype name (compose casts back to it).
    stack_axes: number of leading stack axes.
    in_axes: kernel axes forming the matrix rows, in this order.
    out_axes: kernel axes forming the matrix columns, in this order.
  """
  path: str
  shape: tuple[int, ...]
  dtype: str
  stack_axes: int
  in_axes: tuple[int, ...]
  out_axes: tuple[int, ...]

  @property
  def stack_shape(self) -> tuple[int, ...]:
    return self.shape[:self.stack_axes]

  @property
  def in_shape(self) -> tuple[int, ...]:
    return tuple(self.shape[a] for a in self.in_axes)

  @property
  def out_shape(self) -> tuple[int, ...]:
    return tuple(self.shape[a] for a in self.out_axes)

  @property
  def d_in(self) -> int:
    return math.prod(self.in_shape)

  @property
  def d_out(self) -> int:
    return math.prod(self.out_shape)

  @property
  def rank(self) -> int:
    return min(self.d_in, self.d_out)

  @property
  def permutation(self) -> tuple[int, ...]:
    """Kernel axes reordered to ``(*stack, *in, *out)``."""
    return tuple(range(self.stack_axes)) + self.in_axes + self.out_axes

  @property
  def in_axes_leading(self) -> bool:
    """Whether the kernel already is ``(*stack, *in, *out)`` (Dense/DenseGeneral/Conv)."""
    return self.permutation == tuple(range(len(self.shape)))

  def describe(self) -> str:
    return (f'stack axes {tuple(range(self.stack_axes))}, in axes {self.in_axes}, '
            f'out axes {self.out_axes}')


def default_layout(path: str, shape: tuple[int, ...],
                   stack_axes: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """In/out axes of a kernel by its rank (after ``stack_axes`` leading axes) and name.

  * rank 2, Dense ``(in, out)``: in ``(0,)``, out ``(1,)``.
  * rank 3, Flax attention output ``(heads, head_dim, embed)`` (path's module named ``out``):
    in ``(0, 1)``, out ``(2,)``.
  * rank 3, Flax attention q/k/v or any DenseGeneral with one input axis
    ``(embed, heads, head_dim)``: in ``(0,)``, out ``(1, 2)``.
  * rank 4, conv ``(kh, kw, c_in, c_out)``: in ``(0, 1, 2)``, out ``(3,)``.

  Other ranks have no default; pass a :class:`Decompose` with explicit axes.

  Raises:
    LayoutError: for ranks with no default.
  """
  rank = len(shape) - stack_axes
  s = stack_axes
  parent = path.split('/')[-2] if '/' in path else ''
  if rank == 2:
    return (s,), (s + 1,)
  if rank == 3:
    if parent == 'out' or parent.endswith('_out') or parent == 'o':
      return (s, s + 1), (s + 2,)
    return (s,), (s + 1, s + 2)
  if rank == 4:
    return (s, s + 1, s + 2), (s + 3,)
  raise LayoutError(
      f'{path}: shape {tuple(shape)} with {stack_axes} stack axes has matrix rank {rank}; '
      'a kernel to decompose needs 2 (Dense), 3 (DenseGeneral/attention) or 4 (conv) axes '
      'after the stack axes. Give an explicit sve_jax.Decompose(in_axes=..., out_axes=...) '
      'rule for this path, or mark it frozen.')


def make_layout(path: str, leaf: Any, spec: Decompose) -> KernelLayout:
  """Validates ``spec`` against ``leaf`` and returns its :class:`KernelLayout`."""
  shape = tuple(int(d) for d in np.shape(leaf))
  if spec.stack_axes < 0:
    raise LayoutError(f'{path}: stack_axes must be >= 0, got {spec.stack_axes}')
  if spec.in_axes is None and spec.out_axes is None:
    in_axes, out_axes = default_layout(path, shape, spec.stack_axes)
  elif spec.in_axes is None or spec.out_axes is None:
    raise LayoutError(f'{path}: give both in_axes and out_axes, or neither (got {spec})')
  else:
    in_axes, out_axes = tuple(spec.in_axes), tuple(spec.out_axes)
  layout = KernelLayout(path=path, shape=shape, dtype=jnp.dtype(leaf.dtype).name,
                        stack_axes=spec.stack_axes, in_axes=in_axes, out_axes=out_axes)
  expected = set(range(len(shape)))
  given = list(range(spec.stack_axes)) + list(in_axes) + list(out_axes)
  if sorted(given) != sorted(expected) or not in_axes or not out_axes:
    raise LayoutError(
        f'{path}: shape {shape} does not fit the layout ({layout.describe()}): every axis '
        f'0..{len(shape) - 1} must appear exactly once among stack/in/out axes, and in/out '
        'must be non-empty.')
  return layout


# --------------------------------------------------------------------------------------------
# Frozen tree nodes.
# --------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Factored:
  """Frozen SVD factors of one decomposed kernel.

  ``u: (*stack, d_in, r)`` and ``vh: (*stack, r, d_out)`` in float32, with
  ``W = reshape(u @ diag(s) @ vh)``. ``layout`` is static.
  """
  u: jax.Array
  vh: jax.Array
  layout: KernelLayout = dataclasses.field(metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MemberSlot:
  """Placeholder in ``frozen`` for a per-member leaf; its values live in the trainables."""
  path: str = dataclasses.field(metadata=dict(static=True))
  shape: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
  dtype: str = dataclasses.field(metadata=dict(static=True))


def is_sve_node(x: Any) -> bool:
  return isinstance(x, (Factored, MemberSlot))


# --------------------------------------------------------------------------------------------
# Paths and rules.
# --------------------------------------------------------------------------------------------

Role = Union[str, Decompose]
Rule = tuple[str, Role]
Rules = Union[Sequence[Rule], Callable[[str, Any], Role]]

#: Defaults for common Flax models: Dense/DenseGeneral/Conv kernels are decomposed and their
#: biases trained per member; embeddings, norms, positional tables and anything else frozen.
DEFAULT_RULES: tuple[Rule, ...] = (
    (r'(?i)(^|/)[^/]*(embed|wpe|wte)[^/]*(/|$)', FROZEN),
    (r'(?i)(^|/)[^/]*(norm|ln|bn)[^/]*/', FROZEN),
    (r'(?i)(^|/)(head|classifier)/(kernel|bias)$', MEMBER),
    (r'(^|/)kernel$', DECOMPOSE),
    (r'(^|/)bias$', MEMBER),
)


def _key_name(entry: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def keypath_to_path(keypath: Sequence[Any]) -> Path:
  """Converts a jax key path into a tuple of strings."""
  return tuple(_key_name(k) for k in keypath)


def resolve_role(path: str, leaf: Any, rules: Rules | None) -> Role:
  """The role of one leaf: the first rule whose regex ``re.search``-es ``path``, else frozen.

  Args:
    path: '/'-joined leaf path.
    leaf: the array.
    rules: ``(regex, role)`` pairs, or a callable ``(path, leaf) -> role``; ``None`` uses
      :data:`DEFAULT_RULES`.
  """
  if callable(rules):
    role = rules(path, leaf)
  else:
    role = FROZEN
    for pattern, candidate in (DEFAULT_RULES if rules is None else rules):
      if re.search(pattern, path):
        role = candidate
        break
  if isinstance(role, Decompose) or role in _ROLE_NAMES:
    return role
  raise ValueError(f'{path}: unknown role {role!r}; expected one of {_ROLE_NAMES} or a '
                   'sve_jax.Decompose(...)')


def nested_set(tree: dict, path: Path, value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def flatten_paths(tree: PyTree) -> dict[Path, Any]:
  """``{path: leaf}`` of a nested dict of arrays (the ``s``/trainables layout)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {keypath_to_path(kp): leaf for kp, leaf in flat}


# --------------------------------------------------------------------------------------------
# The SVD: the one place it happens.
# --------------------------------------------------------------------------------------------


def as_matrices(kernel: jax.Array, layout: KernelLayout) -> jax.Array:
  """Views ``kernel`` as ``(*stack, d_in, d_out)`` matrices, in float32."""
  w = jnp.transpose(jnp.asarray(kernel, jnp.float32), layout.permutation)
  return w.reshape(layout.stack_shape + (layout.d_in, layout.d_out))


def from_matrices(w: jax.Array, layout: KernelLayout) -> jax.Array:
  """Inverse of :func:`as_matrices`, cast back to the original dtype."""
  permuted_shape = tuple(layout.shape[a] for a in layout.permutation)
  w = w.reshape(permuted_shape)
  return jnp.transpose(w, np.argsort(layout.permutation)).astype(layout.dtype)


@jax.jit
def _thin_svd(w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  return jnp.linalg.svd(w, full_matrices=False)


def svd_kernels(kernels: Sequence[tuple[jax.Array, KernelLayout]]
                ) -> list[tuple[Factored, jax.Array]]:
  """Thin SVDs of many kernels, one batched call per matrix shape.

  Kernels whose matrix views share ``(*stack, d_in, d_out)`` are stacked and factorised by a
  single compiled SVD, so a transformer's dozens of kernels cost a handful of calls (one per
  distinct shape) instead of one call each.

  Args:
    kernels: ``(kernel, layout)`` pairs.

  Returns:
    ``(Factored(u, vh), s)`` per kernel, in the order given.
  """
  groups: dict[tuple[int, ...], list[int]] = {}
  for i, (_, layout) in enumerate(kernels):
    groups.setdefault(layout.stack_shape + (layout.d_in, layout.d_out), []).append(i)
  out: list[Any] = [None] * len(kernels)
  for members in groups.values():
    batch = jnp.stack([as_matrices(*kernels[i]) for i in members])
    u, s, vh = _thin_svd(batch)
    for j, i in enumerate(members):
      out[i] = (Factored(u=u[j], vh=vh[j], layout=kernels[i][1]), s[j])
  return out


def check_finite(path: str, leaf: Any) -> None:
  """Raises if a weight about to be decomposed holds NaN or inf (skipped when tracing)."""
  if isinstance(leaf, jax.core.Tracer):
    return
  bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(np.asarray(leaf, np.float32))))
  if bad:
    raise LayoutError(f'{path}: weight of shape {tuple(np.shape(leaf))} holds {bad} NaN/inf '
                      'values; refusing to decompose it (check the checkpoint).')


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


def decompose(params: PyTree, rules: Rules | None = None) -> tuple[PyTree, dict]:
  """Splits ``params`` into frozen SVD factors and per-member base values.

  Args:
    params: any params pytree with dict-like containers: linen ``variables['params']``,
      ``nnx.state(model).to_pure_dict()``, or plain nested dicts of arrays.
    rules: ``(regex, role)`` pairs matched in order against each '/'-joined leaf path (first
      match wins, no match means frozen), or a ``(path, leaf) -> role`` predicate. A role is
      ``'decompose'``, ``'member'``, ``'frozen'`` or a :class:`Decompose` layout spec.
      ``None`` uses :data:`DEFAULT_RULES`.

  Returns:
    ``(frozen, s)`` as described in the module docstring. ``s`` holds the singular values in
    float32 and per-member leaves in their own dtype.

  Raises:
    LayoutError: a decomposed leaf does not fit its layout (1-D leaf, inconsistent axes,
      unsupported rank) or holds NaN/inf; the message names the path, shape and layout.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  frozen_leaves = []
  s: dict = {}
  pending = []  # (index in frozen_leaves, path, kernel, layout) of the kernels to factorise
  for keypath, leaf in flat:
    path = keypath_to_path(keypath)
    path_str = '/'.join(path)
    role = resolve_role(path_str, leaf, rules)
    if role == FROZEN:
      frozen_leaves.append(leaf)
      continue
    if role == MEMBER:
      frozen_leaves.append(MemberSlot(path_str, tuple(np.shape(leaf)),
                                      jnp.dtype(leaf.dtype).name))
      nested_set(s, path, jnp.asarray(leaf))
      continue
    spec = role if isinstance(role, Decompose) else Decompose()
    if np.ndim(leaf) < 2 + spec.stack_axes:
      raise LayoutError(
          f'{path_str}: matched as a kernel to decompose but has shape {tuple(np.shape(leaf))};'
          f' a kernel needs at least 2 axes after {spec.stack_axes} stack axes. Mark it '
          "'member' or 'frozen' in the rules.")
    layout = make_layout(path_str, leaf, spec)
    check_finite(path_str, leaf)
    pending.append((len(frozen_leaves), path, leaf, layout))
    frozen_leaves.append(None)  # filled below, after one batched SVD per shape
  factors = svd_kernels([(leaf, layout) for _, _, leaf, layout in pending])
  for (index, path, _, _), (factored, singular_values) in zip(pending, factors):
    frozen_leaves[index] = factored
    nested_set(s, path, singular_values)
  frozen = jax.tree_util.tree_unflatten(treedef, frozen_leaves)
  return frozen, s


def reconstruct(factored: Factored, s: jax.Array) -> jax.Array:
  """``W = U diag(max(s, 0)) Vᵀ`` in the original layout and dtype.

  Negative singular values are clamped to 0, as the method prescribes.
  """
  s = jnp.maximum(jnp.asarray(s, jnp.float32), 0.)
  w = jnp.matmul(factored.u * s[..., None, :], factored.vh)
  return from_matrices(w, factored.layout)


def map_frozen(fn: Callable[[Any, Any], Any], frozen: PyTree, s: Mapping) -> PyTree:
  """Maps ``fn(node, value)`` over ``frozen``'s leaves and SVE nodes.

  ``value`` is the entry of ``s`` at the node's path (``None`` for frozen leaves).

  Raises:
    KeyError: ``s`` lacks an entry that ``frozen`` needs (names the path).
  """
  values = flatten_paths(s)

  def visit(keypath, node):
    if not is_sve_node(node):
      return fn(node, None)
    path = keypath_to_path(keypath)
    if path not in values:
      raise KeyError(f"trainables lack an entry for '{'/'.join(path)}'; were they made from "
                     'this frozen tree?')
    return fn(node, values[path])

  return jax.tree_util.tree_map_with_path(visit, frozen, is_leaf=is_sve_node)


def compose(frozen: PyTree, s_m: Mapping) -> PyTree:
  """Rebuilds an ordinary params pytree for one member.

  Args:
    frozen: the first output of :func:`decompose`.
    s_m: one member's values: the second output of :func:`decompose`, or one slice
      ``trainables[m]`` of :func:`sve_jax.init_members` along the member axis.

  Returns:
    A params tree with the structure, shapes and dtypes of the original; with the
    unperturbed ``s`` it equals the original to float32 round-off.
  """

  def build(node, value):
    if isinstance(node, Factored):
      return reconstruct(node, value)
    if isinstance(node, MemberSlot):
      return jnp.asarray(value).astype(node.dtype)
    return node

  return map_frozen(build, frozen, s_m)


def layouts(frozen: PyTree) -> dict[str, KernelLayout]:
  """``{path: layout}`` of every decomposed kernel in ``frozen``."""
  nodes = jax.tree_util.tree_leaves(frozen, is_leaf=is_sve_node)
  return {n.layout.path: n.layout for n in nodes if isinstance(n, Factored)}


def member_shapes(frozen: PyTree) -> dict[str, tuple[int, ...]]:
  """``{path: shape}`` of one member's values: ``(*stack, r)`` or the per-member leaf's shape."""
  shapes = {}
  for node in jax.tree_util.tree_leaves(frozen, is_leaf=is_sve_node):
    if isinstance(node, Factored):
      shapes[node.layout.path] = node.layout.stack_shape + (node.layout.rank,)
    elif isinstance(node, MemberSlot):
      shapes[node.path] = tuple(node.shape)
  return shapes
