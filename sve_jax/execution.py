"""The factored execution path: ``x → ((x·U) ⊙ s_m)·Vᵀ`` without ever forming ``W_m``.

The compose path (:func:`sve_jax.compose`) materialises each member's kernel, as the authors'
reference does. The factored path never holds ``W_m``. Which is cheaper depends on the kernel,
on ``N`` (the number of input positions: tokens or pixels) and on whether a backward pass
follows; :func:`path_costs` counts the multiply-adds of each (per member, full rank
``r = min(d_in, d_out)``):

=============  ==============================  ============================================
path           forward only                    forward + backward (train step)
=============  ==============================  ============================================
compose        ``r·d_in·d_out + N·d_in·d_out``  ``2·r·d_in·d_out + 3·N·d_in·d_out``
factored       ``N·r·(d_in + d_out)``            ``2·N·r·(d_in + d_out)``
=============  ==============================  ============================================

Compose's backward needs ``dx = dy·Wᵀ``, the weight gradient ``dW = xᵀ·dy`` and its
projection ``diag(Uᵀ·dW·V)`` onto the singular values; factored's needs ``dy·V``, whose
product with the saved ``x·U`` gives ``ds``, and ``(dy·V ⊙ s)·Uᵀ``. So in training a
rectangular kernel (an FFN matrix, ``d_out = 4·d_in``) is always cheaper factored, and a square
one while ``N < 2·d``; forward-only, a square kernel is cheaper factored while ``N < d``.
``execution='auto'`` applies this model per layer and call (:func:`prefer_factored`).
``benchmarks/layer_paths.py`` checks it against measured times.

It works for Flax linen models: the params handed to the model hold a :class:`FactoredKernel`
where the kernel was, and a method interceptor computes ``nn.Dense``, ``nn.DenseGeneral`` and
``nn.Conv`` calls from the factors, reusing the module's own configuration (padding, strides,
precision, dtype) through a rank-``r`` clone. Other layers that meet a factored kernel
(``nn.Einsum``, a kernel whose input axes are not leading, grouped convs) get their kernel
composed on the fly. Models written with other frameworks use the compose path.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sve_jax import choices
from sve_jax import factorize
from sve_jax import layout as layout_lib

EXECUTIONS = ('compose', 'factored', 'auto')


def check_execution(execution: str, key: str = 'execution') -> None:
  """Raises ValueError naming ``key`` (e.g. ``config.execution``) unless ``execution`` is one
  of :data:`EXECUTIONS`."""
  choices.check_choice(execution, EXECUTIONS, key)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FactoredKernel:
  """One member's kernel, kept as its factors: ``W = u @ diag(max(s, 0)) @ vh``."""
  u: jax.Array
  s: jax.Array
  vh: jax.Array
  layout: layout_lib.KernelLayout = dataclasses.field(metadata=dict(static=True))

  def materialize(self) -> jax.Array:
    """The kernel in its original layout and dtype (stack axes already sliced away)."""
    lay = self.layout
    if self.u.ndim == 2 and lay.stack_axes:  # nn.scan sliced the stack axes off.
      lay = _unstacked(lay)
    return factorize.reconstruct(factorize.Factored(u=self.u, vh=self.vh, layout=lay), self.s)


def _unstacked(layout: layout_lib.KernelLayout) -> layout_lib.KernelLayout:
  k = layout.stack_axes
  return dataclasses.replace(
      layout, shape=layout.shape[k:], stack_axes=0,
      in_axes=tuple(a - k for a in layout.in_axes),
      out_axes=tuple(a - k for a in layout.out_axes))


def factored_params(frozen: Any, s_m: Mapping) -> Any:
  """Like :func:`sve_jax.compose`, but decomposed kernels stay :class:`FactoredKernel`."""

  def build(node, value):
    if isinstance(node, factorize.Factored):
      return FactoredKernel(u=node.u, s=jnp.asarray(value, jnp.float32), vh=node.vh,
                            layout=node.layout)
    if isinstance(node, factorize.MemberSlot):
      return jnp.asarray(value).astype(node.dtype)
    return node

  return factorize.map_frozen(build, frozen, s_m)


def member_params(frozen: Any, s_m: Mapping, execution: str = 'compose') -> Any:
  """SVE's :data:`sve_jax.ensemble.MemberParams`: composed kernels, or factored kernels for
  interception."""
  check_execution(execution)
  if execution == 'compose':
    return factorize.compose(frozen, s_m)
  return factored_params(frozen, s_m)


def path_costs(num_positions: int, d_in: int, d_out: int, rank: int,
               training: bool = False) -> dict[str, int]:
  """Multiply-adds of one member's layer on each path (see the module docstring).

  Args:
    num_positions: ``N``, input positions per member (batch × tokens, or × pixels).
    d_in, d_out: the kernel's matrix view.
    rank: ``r``, the number of singular values.
    training: count the backward pass too (activation gradient and gradient of ``s``).

  Returns:
    ``{'compose': ..., 'factored': ...}``.
  """
  n, r = num_positions, rank
  if training:
    return {'compose': 2 * r * d_in * d_out + 3 * n * d_in * d_out,
            'factored': 2 * n * r * (d_in + d_out)}
  return {'compose': r * d_in * d_out + n * d_in * d_out, 'factored': n * r * (d_in + d_out)}


def prefer_factored(num_positions: int, d_in: int, d_out: int, rank: int,
                    training: bool = False) -> bool:
  """Cost model of ``execution='auto'``: whether factored costs less (:func:`path_costs`)."""
  costs = path_costs(num_positions, d_in, d_out, rank, training)
  return costs['factored'] < costs['compose']


def materialize_pays_off(frozen: Any, positions: Mapping[str, int], num_calls: int) -> bool:
  """Whether :func:`sve_jax.materialize_kernels` once, then ``num_calls`` plain forwards,
  costs less than ``num_calls`` forwards of ``execution='auto'``.

  Counts multiply-adds per member with :func:`path_costs`: composing a kernel once is the
  compose path at ``N = 0`` (``r·d_in·d_out``), each call with the composed kernel is the
  rest of the compose path (``N·d_in·d_out``), against ``auto``'s cheaper path per kernel
  and call.

  Args:
    frozen: first output of :func:`sve_jax.decompose`.
    positions: ``{kernel path: N}`` per call (:func:`kernel_positions`).
    num_calls: forwards the materialised kernels would serve (e.g. evaluation batches).
  """
  once = per_call = per_call_auto = 0
  for path, lay in factorize.layouts(frozen).items():
    stack, n = math.prod(lay.stack_shape), positions.get(path, 0)
    compose_once = path_costs(0, lay.d_in, lay.d_out, lay.rank)['compose']
    costs = path_costs(n, lay.d_in, lay.d_out, lay.rank)
    once += stack * compose_once
    per_call += stack * (costs['compose'] - compose_once)
    per_call_auto += stack * min(costs.values())
  return once + num_calls * per_call < num_calls * per_call_auto


def _supports_factored(module: nn.Module, kernel: FactoredKernel) -> bool:
  if kernel.u.ndim != 2 or not _unstacked(kernel.layout).in_axes_leading:
    return False
  if isinstance(module, nn.DenseGeneral):
    return not module.batch_dims
  if isinstance(module, nn.Conv):
    return module.feature_group_count == 1
  return isinstance(module, nn.Dense)


def _call_with_kernel(module: nn.Module, kernel: jax.Array, args, kwargs,
                      **overrides) -> jax.Array:
  """Runs ``module``'s own ``__call__`` on an explicit kernel (and its bias, if any)."""
  params = {'kernel': kernel}
  if overrides.get('use_bias', getattr(module, 'use_bias', False)):
    params['bias'] = module.get_variable('params', 'bias')
  clone = module.clone(parent=None, **overrides)
  return clone.apply({'params': params}, *args, **kwargs)


def _factored_call(module: nn.Module, kernel: FactoredKernel, args, kwargs) -> jax.Array:
  lay = _unstacked(kernel.layout)
  rank = kernel.u.shape[-1]
  u = kernel.u.reshape(lay.in_shape + (rank,))
  # Stage 1 reuses the module itself (padding, strides, dtype) with `rank` output features.
  t = _call_with_kernel(module, u, args, kwargs, features=rank, use_bias=False)
  t = t * jnp.maximum(kernel.s, 0.).astype(t.dtype)
  y = jnp.matmul(t, kernel.vh.astype(t.dtype), precision=getattr(module, 'precision', None))
  y = y.reshape(t.shape[:-1] + lay.out_shape)
  if module.use_bias:
    y = y + jnp.asarray(module.get_variable('params', 'bias'), y.dtype)
  return y


def _positions(inputs: jax.Array, kernel: FactoredKernel) -> int:
  lay = _unstacked(kernel.layout)
  return max(1, math.prod(jnp.shape(inputs)) // max(1, lay.in_shape[-1]))


def _make_interceptor(execution: str, training: bool, record: dict[str, int] | None):

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != '__call__'
        or not isinstance(module, (nn.Dense, nn.DenseGeneral, nn.Conv, nn.Einsum))
        or not module.has_variable('params', 'kernel')):
      return next_fun(*args, **kwargs)
    kernel = module.get_variable('params', 'kernel')
    if not isinstance(kernel, FactoredKernel):
      return next_fun(*args, **kwargs)
    if record is not None:
      record[kernel.layout.path] = _positions(args[0], kernel)
    use_factored = _supports_factored(module, kernel)
    if use_factored and execution == 'auto':
      lay = _unstacked(kernel.layout)
      use_factored = prefer_factored(_positions(args[0], kernel), lay.d_in, lay.d_out,
                                     kernel.u.shape[-1], training)
    if use_factored:
      return _factored_call(module, kernel, args, kwargs)
    return _call_with_kernel(module, kernel.materialize(), args, kwargs)

  return interceptor


@contextlib.contextmanager
def intercept(execution: str, training: bool = False, record: dict[str, int] | None = None):
  """Context in which linen layers holding a :class:`FactoredKernel` run factored/auto.

  ``training`` tells ``'auto'``'s cost model that a backward pass follows. ``record``, if
  given, receives ``{kernel path: input positions}`` of every factored kernel called.
  """
  if execution not in ('factored', 'auto'):
    raise ValueError(f"execution must be 'factored' or 'auto' here, got {execution!r}")
  with nn.intercept_methods(_make_interceptor(execution, training, record)):
    yield


def kernel_positions(apply_fn, frozen: Any, s_m: Mapping, *args, **kwargs) -> dict[str, int]:
  """``{kernel path: N}``, the input positions each decomposed kernel meets in one call.

  Found by abstract evaluation of ``apply_fn(params, *args, **kwargs)`` for one member
  (``jax.eval_shape``: nothing is computed). Kernels that only linen Dense/DenseGeneral/Conv/
  Einsum layers meet are counted; a kernel used outside them is absent.
  """
  positions: dict[str, int] = {}

  def one_call(s_m, args, kwargs):
    with intercept('factored', record=positions):
      return apply_fn(factored_params(frozen, s_m), *args, **kwargs)

  jax.eval_shape(one_call, s_m, args, kwargs)
  return positions
