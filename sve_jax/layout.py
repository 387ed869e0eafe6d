"""Which leaves SVE touches, and how a kernel is viewed as matrices.

Every leaf of a params tree gets one of three roles, decided by rules over its '/'-joined path
(:func:`resolve_role`):

* ``decompose``: the kernel is viewed as a (batch of) matrices ``W: (d_in, d_out)`` (its
  :class:`KernelLayout`) and factorised by :func:`sve_jax.decompose`.
* ``member``: copied once per ensemble member and trained fully (biases of decomposed layers,
  classification heads).
* ``frozen``: shared and untouched (embeddings, norms, positional tables, ...).

Rules are ``(regex, role)`` pairs (first match wins, no match means frozen) or a
``(path, leaf) -> role`` callable; a role is one of the three names or a :class:`Decompose`
with explicit axes. :func:`assign` turns a leaf's role into its layout, and :func:`select`
lists a tree's kernels and per-member leaves: :func:`sve_jax.decompose` and the baselines
that adapt the same kernels both go through them. :func:`as_matrices` / :func:`from_matrices`
are the one place a kernel is reshaped to and from its matrix view.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from sve_jax import tree as tree_lib
from sve_jax.tree import PyTree

Path = tree_lib.Path

DECOMPOSE = 'decompose'
MEMBER = 'member'
FROZEN = 'frozen'
_ROLE_NAMES = (DECOMPOSE, MEMBER, FROZEN)


class LayoutError(ValueError):
  """A leaf does not fit the kernel layout a rule assigned to it."""


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


def _make_layout(path: str, leaf: Any, spec: Decompose) -> KernelLayout:
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


Role = Union[str, Decompose]
Rule = tuple[str, Role]
Rules = Union[Sequence[Rule], Callable[[str, Any], Role]]

def head_rule(module_names: str, case_insensitive: bool = False) -> Rule:
  """The rule that trains a task head per member: the kernel and bias of a module named by
  the regex alternation ``module_names`` (e.g. ``'head'`` or ``'head|classifier'``)."""
  flags = '(?i)' if case_insensitive else ''
  return (rf'{flags}(^|/)({module_names})/(kernel|bias)$', MEMBER)


#: The head rule of this package's backbones: their task head is the module ``head``.
HEAD_RULE: Rule = head_rule('head')

#: Defaults for common Flax models: Dense/DenseGeneral/Conv kernels are decomposed and their
#: biases trained per member; embeddings, norms, positional tables and anything else frozen.
DEFAULT_RULES: tuple[Rule, ...] = (
    (r'(?i)(^|/)[^/]*(embed|wpe|wte)[^/]*(/|$)', FROZEN),
    (r'(?i)(^|/)[^/]*(norm|ln|bn)[^/]*/', FROZEN),
    head_rule('head|classifier', case_insensitive=True),
    (r'(^|/)kernel$', DECOMPOSE),
    (r'(^|/)bias$', MEMBER),
)


def freeze_blocks_below(rules: Rules | None, block_pattern: str, first_block: int
                        ) -> Callable[[str, Any], Role]:
  """``rules`` restricted to the blocks from ``first_block`` up: the leaves of lower blocks
  are frozen, whatever ``rules`` say of them.

  This is how SVE adapts only the top ``K`` of ``L`` blocks (``first_block = L - K``): the
  lower blocks keep their pretrained, undecomposed weights and are shared by every member.
  Under the member ``jax.vmap`` nothing they compute depends on a member, so they run once
  per batch, and no gradient is computed through them.

  Args:
    rules: the rules to restrict (``None``: :data:`DEFAULT_RULES`).
    block_pattern: a regex whose first group captures a block's index in a '/'-joined path,
      e.g. ``r'(?:^|/)encoder/layer_(\\d+)/'``. Paths it does not match (embeddings, the
      head) keep the role ``rules`` give them.
    first_block: the lowest block index that keeps its role.

  Returns:
    A callable rule ``(path, leaf) -> role`` (see :func:`resolve_role`).
  """
  compiled = re.compile(block_pattern)

  def role(path: str, leaf: Any) -> Role:
    match = compiled.search(path)
    if match and int(match.group(1)) < first_block:
      return FROZEN
    return resolve_role(path, leaf, rules)

  return role


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


def assign(path: str, leaf: Any, rules: Rules | None) -> str | KernelLayout:
  """A leaf's role with its layout: :data:`FROZEN`, :data:`MEMBER` or a kernel's layout.

  Raises:
    LayoutError: a kernel to decompose does not fit its layout (too few axes, inconsistent
      axes, a rank with no default); the message names the path, shape and layout.
  """
  role = resolve_role(path, leaf, rules)
  if role in (FROZEN, MEMBER):
    return role
  spec = role if isinstance(role, Decompose) else Decompose()
  if np.ndim(leaf) < 2 + spec.stack_axes:
    raise LayoutError(
        f'{path}: matched as a kernel to decompose but has shape {tuple(np.shape(leaf))};'
        f' a kernel needs at least 2 axes after {spec.stack_axes} stack axes. Mark it '
        "'member' or 'frozen' in the rules.")
  return _make_layout(path, leaf, spec)


def select(params: PyTree, rules: Rules | None
           ) -> tuple[dict[Path, KernelLayout], list[Path]]:
  """The leaves ``rules`` mark ``'decompose'`` (with their layouts) and ``'member'``.

  Args:
    params: a params tree.
    rules: see :func:`resolve_role`.

  Returns:
    ``({path: KernelLayout}, [member paths])``, in params order.

  Raises:
    LayoutError: a selected kernel does not fit its layout (:func:`assign`).
  """
  kernels, members = {}, []
  for path, leaf in tree_lib.flatten_paths(params).items():
    role = assign('/'.join(path), leaf, rules)
    if role == MEMBER:
      members.append(path)
    elif role != FROZEN:
      kernels[path] = role
  return kernels, members


def as_matrices(kernel: jax.Array, layout: KernelLayout) -> jax.Array:
  """Views ``kernel`` as ``(*stack, d_in, d_out)`` matrices, in float32."""
  w = jnp.transpose(jnp.asarray(kernel, jnp.float32), layout.permutation)
  return w.reshape(layout.stack_shape + (layout.d_in, layout.d_out))


def from_matrices(w: jax.Array, layout: KernelLayout) -> jax.Array:
  """Inverse of :func:`as_matrices`, cast back to the original dtype."""
  permuted_shape = tuple(layout.shape[a] for a in layout.permutation)
  w = w.reshape(permuted_shape)
  return jnp.transpose(w, np.argsort(layout.permutation)).astype(layout.dtype)


def map_matrices(kernel: jax.Array, layout: KernelLayout,
                 fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """``fn`` applied to the kernel's ``(*stack, d_in, d_out)`` float32 matrix view.

  The result goes back to the kernel's layout and dtype (conv and DenseGeneral kernels
  included).
  """
  return from_matrices(fn(as_matrices(kernel, layout)), layout)
