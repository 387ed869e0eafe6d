"""The SVD: splitting a params pytree into frozen factors and per-member base values.

Which leaves are decomposed, kept per member or frozen, and how a kernel is viewed as
matrices, is :mod:`sve_jax.layout`'s business. Here a decomposed kernel ``W: (d_in, d_out)``
is factorised once by a thin SVD, ``W = U diag(s) Vᵀ``: U and Vᵀ are frozen and shared; ``s``
(all ``min(d_in, d_out)`` singular values, no truncation) becomes trainable.

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

:func:`compose` is the inverse: ``compose(frozen, s)`` rebuilds an ordinary params tree, one
kernel at a time by :func:`reconstruct`.
"""
from __future__ import annotations

from concurrent import futures
import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from sve_jax import layout as layout_lib
from sve_jax import tree as tree_lib
from sve_jax.tree import PyTree


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
  layout: layout_lib.KernelLayout = dataclasses.field(metadata=dict(static=True))


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
# The SVD: the one place it happens.
# --------------------------------------------------------------------------------------------


@jax.jit
def _thin_svd(w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  return jnp.linalg.svd(w, full_matrices=False)


# Below this ratio of smallest to largest singular value, :func:`gram_svd` declines (dividing
# by s would amplify the Gram matrix's rounding); LAPACK's SVD then takes the batch.
GRAM_MIN_RATIO = 1e-6


def gram_svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """Thin SVD of a batch ``w: (..., m, n)`` by the float64 eigendecomposition of its Gram matrix.

  With ``k = min(m, n)`` and ``w`` (or its transpose) wide, ``w wᵀ = U diag(s²) Uᵀ`` is
  ``k × k``; then ``Vᵀ = diag(1/s) Uᵀ w``, re-orthonormalised by one Newton–Schulz step
  where needed. In float64 the singular values are accurate to ~1e-10 of the largest
  (float32 LAPACK: ~1e-7), and U, V orthonormal to float32 precision. On CPU it is faster
  than LAPACK's divide and conquer as jax calls it, which fares badly on square and wide
  row-major matrices.

  A batch is split over the host's cores, each part on one BLAS thread: OpenBLAS's own
  threads spin-wait for cores that another process holds, and one eigendecomposition at a
  time is too small to gain from them (BENCHMARKS.md, "The decomposition beside a busy
  core").

  Args:
    w: real matrices, ``(..., m, n)``.

  Returns:
    ``(u, s, vh)`` in float32 with ``s`` descending, as ``jnp.linalg.svd(w,
    full_matrices=False)``; or ``None`` where some matrix is numerically rank-deficient
    (``s_min < GRAM_MIN_RATIO · s_max``).
  """
  w = np.asarray(w, np.float64)
  parts = np.array_split(w, min(len(w), os.cpu_count() or 1)) if w.ndim > 2 else [w]
  with threadpoolctl.threadpool_limits(limits=1, user_api='blas'), \
      futures.ThreadPoolExecutor(len(parts)) as pool:
    factors = list(pool.map(_gram_svd_part, parts))
  if any(f is None for f in factors):
    return None
  return tuple(np.concatenate(f) if w.ndim > 2 else f[0] for f in zip(*factors))


def _gram_svd_part(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """:func:`gram_svd` of float64 matrices ``w: (..., m, n)`` on the calling thread."""
  tall = w.shape[-2] > w.shape[-1]
  if tall:  # factor the wide transpose, swap the factors back below
    w = np.swapaxes(w, -1, -2)
  eigenvalues, u = np.linalg.eigh(w @ np.swapaxes(w, -1, -2))
  s = np.sqrt(np.maximum(eigenvalues[..., ::-1], 0.))  # eigh ascends; the SVD descends
  if np.any(s[..., -1] < GRAM_MIN_RATIO * s[..., 0]) or not np.all(np.isfinite(s)):
    return None
  u = u[..., ::-1]
  vh = (np.swapaxes(u, -1, -2) @ w) / s[..., :, None]
  # Rows of vh with tiny s are orthonormal only to ~1e-16·(s_max/s)²; where that shows
  # above float32's resolution, one Newton–Schulz step, vh ← vh + ½ (I − vh vhᵀ) vh, squares
  # the error and moves U diag(s) Vᵀ by ~1e-11 of s_max.
  residual = np.eye(vh.shape[-2]) - vh @ np.swapaxes(vh, -1, -2)
  if np.max(np.abs(residual)) > 1e-8:
    vh = vh + 0.5 * residual @ vh
  if tall:
    u, vh = np.swapaxes(vh, -1, -2), np.swapaxes(u, -1, -2)
  return u.astype(np.float32), s.astype(np.float32), vh.astype(np.float32)


def _factorise_batch(group: list[tuple[Any, layout_lib.KernelLayout]]
                     ) -> tuple[Any, Any, Any]:
  """``(u, s, vh)`` of a same-shape group of kernels, stacked on a leading axis.

  On the CPU backend with concrete kernels, :func:`gram_svd` on the host (already the device);
  elsewhere, or where it declines, one compiled ``jnp.linalg.svd`` of the stack.
  """
  matrices = [layout_lib.as_matrices(*kernel) for kernel in group]
  concrete = not any(isinstance(m, jax.core.Tracer) for m in matrices)
  if concrete and jax.default_backend() == 'cpu':
    factors = gram_svd(np.stack([np.asarray(m) for m in matrices]))
    if factors is not None:
      return factors
  return _thin_svd(jnp.stack(matrices))


def _svd_kernels(kernels: Sequence[tuple[jax.Array, layout_lib.KernelLayout]]
                ) -> list[tuple[Factored, jax.Array]]:
  """Thin SVDs of many kernels, one batched call per matrix shape.

  Kernels whose matrix views share ``(*stack, d_in, d_out)`` are stacked and factorised in
  one call (:func:`gram_svd` on CPU, else a compiled ``jnp.linalg.svd``), so a transformer's
  dozens of kernels cost a handful of calls (one per distinct shape) instead of one each.

  Args:
    kernels: ``(kernel, layout)`` pairs.

  Returns:
    ``(Factored(u, vh), s)`` per kernel, in the order given, as jax arrays in float32.
  """
  groups: dict[tuple[int, ...], list[int]] = {}
  for i, (_, layout) in enumerate(kernels):
    groups.setdefault(layout.stack_shape + (layout.d_in, layout.d_out), []).append(i)
  out: list[Any] = [None] * len(kernels)
  for members in groups.values():
    u, s, vh = _factorise_batch([kernels[i] for i in members])
    for j, i in enumerate(members):
      out[i] = (Factored(u=jnp.asarray(u[j]), vh=jnp.asarray(vh[j]), layout=kernels[i][1]),
                jnp.asarray(s[j]))
  return out


def _check_finite(path: str, leaf: Any) -> None:
  """Raises if a weight about to be decomposed holds NaN or inf (skipped when tracing)."""
  if isinstance(leaf, jax.core.Tracer):
    return
  bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(np.asarray(leaf, np.float32))))
  if bad:
    raise layout_lib.LayoutError(
        f'{path}: weight of shape {tuple(np.shape(leaf))} holds {bad} NaN/inf values; '
        'refusing to decompose it (check the checkpoint).')


# --------------------------------------------------------------------------------------------
# Decompose and compose.
# --------------------------------------------------------------------------------------------


def decompose(params: PyTree, rules: layout_lib.Rules | None = None) -> tuple[PyTree, dict]:
  """Splits ``params`` into frozen SVD factors and per-member base values.

  Args:
    params: any params pytree with dict-like containers: linen ``variables['params']``,
      ``nnx.state(model).to_pure_dict()``, or plain nested dicts of arrays.
    rules: ``(regex, role)`` pairs matched in order against each '/'-joined leaf path (first
      match wins, no match means frozen), or a ``(path, leaf) -> role`` predicate. A role is
      ``'decompose'``, ``'member'``, ``'frozen'`` or a :class:`sve_jax.Decompose` layout
      spec. ``None`` uses :data:`sve_jax.DEFAULT_RULES`. See :mod:`sve_jax.layout`.

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
    path = tree_lib.keypath_to_path(keypath)
    path_str = '/'.join(path)
    role = layout_lib.assign(path_str, leaf, rules)
    if role == layout_lib.FROZEN:
      frozen_leaves.append(leaf)
    elif role == layout_lib.MEMBER:
      frozen_leaves.append(MemberSlot(path_str, tuple(np.shape(leaf)),
                                      jnp.dtype(leaf.dtype).name))
      tree_lib.nested_set(s, path, jnp.asarray(leaf))
    else:
      _check_finite(path_str, leaf)
      pending.append((len(frozen_leaves), path, leaf, role))
      frozen_leaves.append(None)  # filled below, after one batched SVD per shape
  factors = _svd_kernels([(leaf, layout) for _, _, leaf, layout in pending])
  for (index, path, _, _), (factored, singular_values) in zip(pending, factors):
    frozen_leaves[index] = factored
    tree_lib.nested_set(s, path, singular_values)
  frozen = jax.tree_util.tree_unflatten(treedef, frozen_leaves)
  return frozen, s


def reconstruct(factored: Factored, s: jax.Array) -> jax.Array:
  """``W = U diag(max(s, 0)) Vᵀ`` in the original layout and dtype.

  Negative singular values are clamped to 0, as the method prescribes.
  """
  s = jnp.maximum(jnp.asarray(s, jnp.float32), 0.)
  w = jnp.matmul(factored.u * s[..., None, :], factored.vh)
  return layout_lib.from_matrices(w, factored.layout)


def map_frozen(fn: Callable[[Any, Any], Any], frozen: PyTree, s: Mapping) -> PyTree:
  """Maps ``fn(node, value)`` over ``frozen``'s leaves and SVE nodes.

  ``value`` is the entry of ``s`` at the node's path (``None`` for frozen leaves).

  Raises:
    KeyError: ``s`` lacks an entry that ``frozen`` needs (names the path).
  """
  values = tree_lib.flatten_paths(s)

  def visit(keypath, node):
    if not is_sve_node(node):
      return fn(node, None)
    path = tree_lib.keypath_to_path(keypath)
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


def layouts(frozen: PyTree) -> dict[str, layout_lib.KernelLayout]:
  """``{path: layout}`` of every decomposed kernel in ``frozen``."""
  nodes = jax.tree_util.tree_leaves(frozen, is_leaf=is_sve_node)
  return {n.layout.path: n.layout for n in nodes if isinstance(n, Factored)}


def factored_nodes(frozen: PyTree) -> dict[tuple[str, ...], Factored]:
  """``{path: Factored}`` of the decomposed kernels in ``frozen``."""
  return {tree_lib.keypath_to_path(kp): node for kp, node in
          jax.tree_util.tree_flatten_with_path(frozen, is_leaf=is_sve_node)[0]
          if isinstance(node, Factored)}


def factored_paths(frozen: PyTree) -> frozenset[tuple[str, ...]]:
  """Paths of the decomposed kernels in ``frozen``: their ``s`` leaves are singular values."""
  return frozenset(factored_nodes(frozen))


def member_shapes(frozen: PyTree) -> dict[str, tuple[int, ...]]:
  """``{path: shape}`` of one member's values: ``(*stack, r)`` or the per-member leaf's shape."""
  shapes = {}
  for node in jax.tree_util.tree_leaves(frozen, is_leaf=is_sve_node):
    if isinstance(node, Factored):
      shapes[node.layout.path] = node.layout.stack_shape + (node.layout.rank,)
    elif isinstance(node, MemberSlot):
      shapes[node.path] = tuple(node.shape)
  return shapes


def original_shapes(frozen: PyTree) -> PyTree:
  """The params tree ``frozen`` was made from, as ``jax.ShapeDtypeStruct`` leaves."""

  def shape_of(node):
    if isinstance(node, Factored):
      return jax.ShapeDtypeStruct(node.layout.shape, node.layout.dtype)
    if isinstance(node, MemberSlot):
      return jax.ShapeDtypeStruct(node.shape, node.dtype)
    return jax.ShapeDtypeStruct(np.shape(node), node.dtype)

  return jax.tree_util.tree_map(shape_of, frozen, is_leaf=is_sve_node)
