"""BatchEnsemble (``batch_ensemble``): rank-1 multiplicative fast weights per member.

On every kernel the backbone's SVE rules mark ``'decompose'`` (the same matrices SVE
targets), member ``m`` uses, in the kernel's ``(d_in, d_out)`` matrix view (conv and
DenseGeneral kernels included),

  W_m = W ⊙ (r_m s_mᵀ),   i.e.   x W_m = ((x ⊙ r_m) W) ⊙ s_m,

with its own ``r_m: (d_in,)`` and ``s_m: (d_out,)``. It also trains its own copy of every leaf
the rules mark ``'member'`` (the biases of those layers, copied from the backbone) and its
own fresh head (``N(0, 0.01²)``, bias 0). The shared ``W`` and everything else stay frozen.

Initialisation: ``r_m, s_m ~ N(1, σ²)`` elementwise with ``σ = noise_std``
(:class:`~sve_jax.methods.base.MethodOptions`; 0.01 by default, SVE's σ_init), from member ``m``'s own key. The BatchEnsemble paper's random ±1
signs (or ``N(1, 0.5²)``) are made for training from scratch; on a pretrained backbone they
would scramble every adapted matrix, so members start near the backbone as SVE's do.
Training uses the backbone's dropout.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import jax
import jax.numpy as jnp

from sve_jax import layout as layout_lib
from sve_jax import tree as tree_lib
from sve_jax.methods import adapters
from sve_jax.methods import base

if TYPE_CHECKING:
  from sve_jax.models import Backbone


def _init_fast_weights(key: jax.Array, kernels: Mapping[base.Path, layout_lib.KernelLayout],
                      num_members: int, noise_std: float) -> tuple[dict, dict]:
  """Per-member ``r ~ N(1, noise_std²)`` and ``s ~ N(1, noise_std²)`` of every kernel.

  Returns:
    ``(r, s)``: ``{path: (M, *stack, d_in)}`` and ``{path: (M, *stack, d_out)}``.
  """
  keys = base.member_keys(key, num_members)
  r, s = {}, {}
  for i, (path, layout) in enumerate(kernels.items()):
    for j, (out, size) in enumerate(((r, layout.d_in), (s, layout.d_out))):
      shape = layout.stack_shape + (size,)
      draw = lambda k, shape=shape, f=2 * i + j: 1. + noise_std * jax.random.normal(
          jax.random.fold_in(k, f), shape, jnp.float32)
      out[path] = jax.vmap(draw)(keys)
  return r, s


def _scale_matrix(w: jax.Array, r: jax.Array, s: jax.Array) -> jax.Array:
  """``W ⊙ (r sᵀ) = diag(r) W diag(s)``, so that ``x (W ⊙ r sᵀ) = ((x ⊙ r) W) ⊙ s``.

  Args:
    w: ``(*stack, d_in, d_out)`` matrices.
    r: ``(*stack, d_in)`` input-side factors.
    s: ``(*stack, d_out)`` output-side factors.
  """
  return w * r[..., :, None] * s[..., None, :]


def build(backbone: Backbone, options: base.MethodOptions, key: jax.Array) -> base.MethodSetup:
  """``options.num_members`` BatchEnsemble members on the backbone's SVE-targeted kernels.

  Raises:
    ValueError: the SVE rules select no kernel.
  """
  num_members = int(options.num_members)
  kernels, member_paths = layout_lib.select(backbone.params, backbone.rules)
  if not kernels:
    raise ValueError(f'batch_ensemble: the {backbone.name} SVE rules select no kernel')
  noise_std = float(options.noise_std)
  weights = tree_lib.flatten_paths(backbone.params)
  copies = base.identical_copies(tree_lib.nest({p: weights[p] for p in member_paths}),
                                 num_members)
  adapter = adapters.KernelAdapter(
      factor_keys=('fast_r', 'fast_s'),
      init_factors=lambda k: _init_fast_weights(k, kernels, num_members, noise_std),
      adapt=_scale_matrix,
      own_leaves=lambda heads: {**copies, **({'head': heads} if heads else {})},
      own_key='params', own_prefix=())
  return adapters.build_adapted('batch_ensemble', backbone, kernels, adapter, key, num_members)


METHOD = base.Method('batch_ensemble', build)
