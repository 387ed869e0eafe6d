"""LoRA-Ensemble (``lora_ensemble``): per-member low-rank adapters on the attention matrices.

The backbone is frozen. On every kernel its ``ATTENTION_RULES`` mark ``'decompose'`` (the
attention q, k, v and output projections of every block: BERT's query/key/value/attention
output, ViT's fused qkv and proj) member ``m`` adds a rank-``r`` update in the kernel's
``(d_in, d_out)`` matrix view::

  W_m = W + (alpha / r) · A_m B_m,   A_m: (d_in, r),  B_m: (r, d_out),   alpha = r (scale 1)

with ``r = lora_rank`` (:class:`~sve_jax.methods.base.MethodOptions`, default 8). ``A_m`` is
Xavier-uniform with gain 10 (variance ``100 · 2 / (d_in + r)``) from member ``m``'s own key
and ``B_m = 0``, so every member starts as the backbone; each member also has its own fresh
head (``N(0, 0.01²)``, bias 0), where the backbone has one (a decoder classifying by prompt
shares its LM head). Biases and everything else stay shared and frozen. Training uses the
backbone's dropout.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import jax
import jax.numpy as jnp

from sve_jax import layout as layout_lib
from sve_jax.methods import adapters
from sve_jax.methods import base

if TYPE_CHECKING:
  from sve_jax.models import Backbone


#: Gain of the Xavier-uniform initialisation of ``A`` (the LoRA-Ensemble reference).
A_GAIN = 10.
#: The trainables keys of the ``A`` and ``B`` trees.
FACTOR_KEYS = ('lora_a', 'lora_b')


def _xavier_uniform(key: jax.Array, shape: tuple[int, ...], gain: float = A_GAIN) -> jax.Array:
  """Uniform ``(..., fan_in, fan_out)`` draws with variance ``gain² · 2 / (fan_in + fan_out)``.

  Leading axes (stack axes) are batch axes, as in ``torch.nn.init.xavier_uniform_`` applied
  per matrix.
  """
  batch = tuple(range(len(shape) - 2))
  init = jax.nn.initializers.variance_scaling(gain ** 2, 'fan_avg', 'uniform', in_axis=-2,
                                              out_axis=-1, batch_axis=batch)
  return init(key, shape, jnp.float32)


def _init_adapters(key: jax.Array, kernels: Mapping[base.Path, layout_lib.KernelLayout],
                  num_members: int, rank: int) -> tuple[dict, dict]:
  """Per-member ``A`` (Xavier-uniform, gain 10) and ``B`` (zeros) of every kernel.

  Member ``m`` draws from its own key (:func:`base.member_keys`).

  Returns:
    ``(a, b)``: ``{path: (M, *stack, d_in, rank)}`` and ``{path: (M, *stack, rank, d_out)}``.
  """
  keys = base.member_keys(key, num_members)
  a, b = {}, {}
  for i, (path, layout) in enumerate(kernels.items()):
    shape = layout.stack_shape + (layout.d_in, rank)
    a[path] = jax.vmap(lambda k, shape=shape, i=i: _xavier_uniform(
        jax.random.fold_in(k, i), shape))(keys)
    b[path] = jnp.zeros((num_members,) + layout.stack_shape + (rank, layout.d_out),
                        jnp.float32)
  return a, b


def lora_setup(name: str, backbone: Backbone, options: base.MethodOptions, key: jax.Array,
               num_members: int) -> base.MethodSetup:
  """``num_members`` LoRA members of rank ``options.lora_rank`` (alpha = rank), named ``name``.

  Raises:
    ValueError: the backbone has no attention (no ``attention_rules``, e.g. EfficientNet),
      or its rules select no kernel.
  """
  if backbone.attention_rules is None:
    raise ValueError(f'{name} adapts attention matrices, and the {backbone.name} '
                     'backbone has no attention; choose another config.method')
  rank = int(options.lora_rank)
  if rank < 1:
    raise ValueError(f'config.lora_rank={rank} must be >= 1')
  kernels, _ = layout_lib.select(backbone.params, backbone.attention_rules)
  if not kernels:
    raise ValueError(f'{name}: the {backbone.name} attention rules select no kernel')
  scale = 1.  # alpha / rank with alpha = rank
  adapter = adapters.KernelAdapter(
      factor_keys=FACTOR_KEYS,
      init_factors=lambda k: _init_adapters(k, kernels, num_members, rank),
      adapt=lambda w, a_m, b_m: w + scale * (a_m @ b_m))
  return adapters.build_adapted(name, backbone, kernels, adapter, key, num_members)


def build(backbone: Backbone, options: base.MethodOptions, key: jax.Array) -> base.MethodSetup:
  """``options.num_members`` LoRA members (:func:`lora_setup`)."""
  return lora_setup('lora_ensemble', backbone, options, key, int(options.num_members))


METHOD = base.Method('lora_ensemble', build, learning_rate_key=base.LORA_LEARNING_RATE)
