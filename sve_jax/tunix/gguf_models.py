"""llama.cpp GGUF files as tunix's NNX models, with their tokenizers.

:func:`load_tunix_model` reads a GGUF file into the tunix model of its
``general.architecture``, configured from the file's metadata, in float32:

- ``llama`` (SmolLM2-135M-Instruct: :func:`sve_jax.models.llama.offline_smollm2_path`):
  ``tunix.models.llama3.model.Llama3``, with :class:`Llama3Attention` (see there);
- ``gemma3`` (Gemma 3 270M: :func:`offline_gemma3_270m_path`): ``tunix.models.gemma3.model.
  Gemma3``, text only.

The configs (:func:`llama3_config`, :func:`gemma3_config`) map
:func:`sve_jax.models.llama.gguf_config`, the one reader of the file's metadata, to tunix's
fields, and refuse only what tunix's models can't run.

:data:`TENSORS` is the one table from GGUF tensors to tunix's parameters. Tensors are read
and dequantised by :mod:`sve_jax.models.llama` (``gguf_tensor``), which also reads the
tokenizers (``gguf_tokenizer``: byte-level BPE, and SentencePiece vocabularies such as Gemma's
rebuilt as a ``tokenizers`` BPE by ``llama.sentencepiece_tokenizer``).

  model, tokenizer, pad_id = load_tunix_model(offline_gemma3_270m_path())
  logits, _ = model(tokens, positions, None, attention_mask)   # (B, T, vocab)
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
from typing import Any, Callable

import einops
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from tunix.models.gemma3 import model as gemma3_lib
from tunix.models.llama3 import model as llama3_lib

from sve_jax.models import llama
from sve_jax.models import weights_io
from sve_jax.models.llama import offline_gemma3_270m_path  # pylint: disable=unused-import
from sve_jax.models.weights_io import WeightsError


@dataclasses.dataclass(frozen=True)
class Tensor:
  """Where one GGUF tensor goes in a tunix model.

  Attributes:
    target: the parameter's path in the model's state, ``{i}`` for the layer.
    pattern: ``einops`` rearrangement from the GGUF tensor's numpy axes (torch's ``(out,
      in)`` order) to the parameter's; the axis sizes come from the parameter's shape.
    index: position along the parameter's first axis, where it stacks several tensors
      (Gemma's ``kv_einsum``: k, v).
    offset: added after: llama.cpp stores Gemma's RMSNorm scales as ``1 + w``.
    rotary: llama.cpp's interleaved rotary rows (``llama`` q, k), put back in halves
      (:func:`sve_jax.models.llama.unpermute_rotary_rows`).
  """
  target: str
  pattern: str
  index: int | None = None
  offset: float = 0.
  rotary: bool = False


def _gemma_norm(target: str) -> Tensor:
  """A Gemma RMSNorm scale: llama.cpp stores ``1 + w``, tunix (and HF) hold ``w``."""
  return Tensor(target, 'd -> d', offset=-1.)


#: GGUF tensor (``blk.{i}.`` for layer i) → tunix parameter, per ``general.architecture``.
#: A tensor whose target the configured model lacks (``output.weight`` of a tied Llama) must
#: be absent from the file; so must any tensor not listed.
TENSORS: dict[str, dict[str, Tensor]] = {
    'llama': {
        'token_embd.weight': Tensor('embedder.input_embedding', 'v d -> v d'),
        'output_norm.weight': Tensor('final_norm.w', 'd -> d'),
        'output.weight': Tensor('lm_head.w', 'v d -> d v'),
        'blk.{i}.attn_norm.weight': Tensor('layers.{i}.input_layernorm.w', 'd -> d'),
        'blk.{i}.attn_q.weight': Tensor('layers.{i}.attn.q_proj.w', '(n h) d -> d n h',
                                        rotary=True),
        'blk.{i}.attn_k.weight': Tensor('layers.{i}.attn.k_proj.w', '(n h) d -> d n h',
                                        rotary=True),
        'blk.{i}.attn_v.weight': Tensor('layers.{i}.attn.v_proj.w', '(n h) d -> d n h'),
        'blk.{i}.attn_output.weight': Tensor('layers.{i}.attn.o_proj.w', 'd (n h) -> n h d'),
        'blk.{i}.ffn_norm.weight': Tensor('layers.{i}.post_attention_layernorm.w', 'd -> d'),
        'blk.{i}.ffn_gate.weight': Tensor('layers.{i}.mlp.gate_proj.kernel', 'f d -> d f'),
        'blk.{i}.ffn_up.weight': Tensor('layers.{i}.mlp.up_proj.kernel', 'f d -> d f'),
        'blk.{i}.ffn_down.weight': Tensor('layers.{i}.mlp.down_proj.kernel', 'd f -> f d'),
    },
    'gemma3': {
        'token_embd.weight': Tensor('embedder.input_embedding', 'v d -> v d'),
        'output_norm.weight': _gemma_norm('final_norm.scale'),
        'blk.{i}.attn_norm.weight': _gemma_norm('layers.{i}.pre_attention_norm.scale'),
        'blk.{i}.attn_q.weight': Tensor('layers.{i}.attn.q_einsum.w', '(n h) d -> n d h'),
        'blk.{i}.attn_k.weight': Tensor('layers.{i}.attn.kv_einsum.w', '(n h) d -> n d h', 0),
        'blk.{i}.attn_v.weight': Tensor('layers.{i}.attn.kv_einsum.w', '(n h) d -> n d h', 1),
        'blk.{i}.attn_q_norm.weight': _gemma_norm('layers.{i}.attn._query_norm.scale'),
        'blk.{i}.attn_k_norm.weight': _gemma_norm('layers.{i}.attn._key_norm.scale'),
        'blk.{i}.attn_output.weight': Tensor('layers.{i}.attn.attn_vec_einsum.w',
                                             'd (n h) -> n h d'),
        'blk.{i}.post_attention_norm.weight': _gemma_norm('layers.{i}.post_attention_norm.scale'),
        'blk.{i}.ffn_norm.weight': _gemma_norm('layers.{i}.pre_ffw_norm.scale'),
        'blk.{i}.ffn_gate.weight': Tensor('layers.{i}.mlp.gate_proj.kernel', 'f d -> d f'),
        'blk.{i}.ffn_up.weight': Tensor('layers.{i}.mlp.up_proj.kernel', 'f d -> d f'),
        'blk.{i}.ffn_down.weight': Tensor('layers.{i}.mlp.down_proj.kernel', 'd f -> f d'),
        'blk.{i}.post_ffw_norm.weight': _gemma_norm('layers.{i}.post_ffw_norm.scale'),
    },
}


# --------------------------------------------------------------------------------------------
# Models and their configs from GGUF metadata.
# --------------------------------------------------------------------------------------------

class Llama3Attention(llama3_lib.Attention):
  """tunix's Llama 3 attention, rotating at ``config.rope_theta``.

  tunix 0.1.7's ``Attention.block`` calls ``apply_rope`` without ``rope_theta``, so every
  ``Llama3`` rotates at that function's default base 1e6, whatever its config says (SmolLM2
  was trained at 1e5). This runs tunix's own ``block`` with ``apply_rope`` bound to the
  config's base; parameters and paths are tunix's.
  """

  def block(self, *args):
    parent = llama3_lib.Attention.block
    rope = functools.partial(llama3_lib.apply_rope, rope_theta=self.config.rope_theta)
    block = types.FunctionType(parent.__code__, {**parent.__globals__, 'apply_rope': rope},
                               parent.__name__, parent.__defaults__, parent.__closure__)
    return block(self, *args)


def _llama3(config: llama3_lib.ModelConfig) -> llama3_lib.Llama3:
  """tunix's ``Llama3`` with :class:`Llama3Attention` in every layer."""
  model = llama3_lib.Llama3(config, rngs=nnx.Rngs(0))
  for layer in model.layers:
    layer.attn = Llama3Attention(config, rngs=nnx.Rngs(0))
  return model


def llama3_config(reader, path: str) -> llama3_lib.ModelConfig:
  """tunix's Llama 3 config of a ``llama`` GGUF file (:func:`llama.gguf_config`'s reading).

  Raises:
    WeightsError: biases or rope scaling (tunix's Llama 3 has neither), or what
      ``gguf_config`` refuses.
  """
  c = llama.gguf_config(reader, path)
  if c.attention_bias or c.output_bias:
    raise WeightsError(f"{path}: attention biases (blk.0.attn_q.bias, ...) don't fit tunix's "
                       'Llama3, which has none')
  if c.rope_scaling:
    raise WeightsError(f"{path}: rope scaling {dict(c.rope_scaling)} doesn't fit tunix's Llama3, "
                       'which has none')
  return llama3_lib.ModelConfig(
      num_layers=c.num_hidden_layers, vocab_size=c.vocab_size, embed_dim=c.hidden_size,
      hidden_dim=c.intermediate_size, num_heads=c.num_attention_heads,
      head_dim=c.dim_per_head, num_kv_heads=c.num_key_value_heads, rope_theta=c.rope_theta,
      norm_eps=c.rms_norm_eps, weight_tying=c.tie_word_embeddings)


#: RMSNorm epsilon that tunix's Gemma 3 hard-codes.
GEMMA3_NORM_EPS = 1e-6


def gemma3_config(reader, path: str) -> gemma3_lib.ModelConfig:
  """tunix's Gemma 3 config of a ``gemma3`` GGUF file, text only: :func:`llama.gguf_config`'s
  reading (the one reader of the metadata), mapped to tunix's fields.

  Neither GGUF nor tunix's config holds the 5 sliding : 1 global layer pattern: llama.cpp,
  tunix and ``gguf_config`` all fix it. Linear rope scaling (Gemma 3 4B, 12B, 27B: factor 8)
  becomes ``global_scale_factor``: in tunix as in ``gguf_config``, only global layers scale.
  Queries scale by ``1/√query_pre_attn_scalar``: ``head_dim``, or ``embed_dim/heads`` in the
  62-layer 27B.

  Raises:
    WeightsError: what ``gguf_config`` refuses; another architecture; an RMSNorm epsilon
      other than 1e-6 (tunix's Gemma3 fixes it); as many kv heads as query heads (no Gemma 3
      has; tunix then fuses q, k and v into a ``qkv_einsum`` that :data:`TENSORS` does not
      fill). Messages name the file.
  """
  c = llama.gguf_config(reader, path)
  if c.architecture != 'gemma3':
    raise WeightsError(f'{path}: architecture {c.architecture!r} is not gemma3')
  if not math.isclose(c.rms_norm_eps, GEMMA3_NORM_EPS, rel_tol=1e-6):
    raise WeightsError(f'{path}: gemma3.attention.layer_norm_rms_epsilon is {c.rms_norm_eps}; '
                       f"tunix's Gemma3 fixes it at {GEMMA3_NORM_EPS}")
  if c.num_key_value_heads == c.num_attention_heads:
    raise WeightsError(f'{path}: as many kv heads as query heads ({c.num_attention_heads}); '
                       'tunix fuses them (qkv_einsum), which TENSORS does not fill')
  norm = gemma3_lib.QueryPreAttentionNormalisation
  return gemma3_lib.ModelConfig(
      num_layers=c.num_hidden_layers, num_embed=c.vocab_size, embed_dim=c.hidden_size,
      hidden_dim=c.intermediate_size, num_heads=c.num_attention_heads, head_dim=c.dim_per_head,
      num_kv_heads=c.num_key_value_heads, sliding_window_size=c.sliding_window,
      local_base_frequency=c.rope_local_theta, global_base_frequency=c.rope_theta,
      global_scale_factor=float(dict(c.rope_scaling).get('factor', 1.)),
      query_pre_attn_norm=(norm.BY_ONE_OVER_SQRT_HEAD_DIM
                           if c.query_pre_attn_scalar == c.dim_per_head
                           else norm.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS))


#: ``general.architecture`` → (the tunix model of a config, the config of a GGUF reader).
ARCHITECTURES: dict[str, tuple[Callable[[Any], nnx.Module], Callable[..., Any]]] = {
    'llama': (_llama3, llama3_config),
    'gemma3': (lambda config: gemma3_lib.Gemma3(config, rngs=nnx.Rngs(0)), gemma3_config),
}


# --------------------------------------------------------------------------------------------
# Weights.
# --------------------------------------------------------------------------------------------

def _axis_sizes(pattern: str, target: tuple[int, ...]) -> dict[str, int]:
  """The sizes of ``pattern``'s axes, from the shape ``target`` it rearranges into."""
  return dict(zip(pattern.split('->')[1].split(), target))


def _gguf_shape(pattern: str, target: tuple[int, ...]) -> tuple[int, ...]:
  """The GGUF (numpy) shape that ``pattern`` rearranges into ``target``."""
  sizes = _axis_sizes(pattern, target)
  groups = re.findall(r'\(([^)]*)\)|(\w+)', pattern.split('->')[0])
  return tuple(math.prod(sizes[a] for a in (group or axis).split()) for group, axis in groups)


def _dotted(keys) -> str:
  """``'layers.0.attn.q_proj.w'``: a tree path of a model's pure state dict."""
  return '.'.join(str(getattr(k, 'key', k)) for k in keys)


def _expected_tensors(arch: str, num_layers: int, params: dict[str, Any]
                      ) -> dict[str, tuple[str, Tensor]]:
  """``{GGUF name: (parameter path, Tensor)}`` for the tensors a model's parameters need."""
  expected = {}
  for name, tensor in TENSORS[arch].items():
    for i in range(num_layers) if '{i}' in name else [None]:
      target = tensor.target.format(i=i)
      if target in params:
        expected[name.format(i=i)] = (target, tensor)
  missing = set(params) - {target for target, _ in expected.values()}
  assert not missing, f'TENSORS[{arch!r}] fills no GGUF tensor into {sorted(missing)}'
  return expected


def read_params(reader, path: str, arch: str, params: dict[str, jax.ShapeDtypeStruct],
                num_layers: int, dtype: Any) -> dict[str, np.ndarray]:
  """The parameters ``params`` (paths and shapes) of a tunix model from a GGUF reader, by
  :data:`TENSORS`, as ``dtype``.

  Raises:
    WeightsError: a missing, unexpected or misshapen tensor, or an unsupported tensor type;
      names the file and the tensor.
  """
  tensors = {t.name: t for t in reader.tensors}
  expected = _expected_tensors(arch, num_layers, params)
  weights_io.check_keys(tensors, expected, path)
  values = {}
  for name, (target, tensor) in expected.items():
    shape = params[target].shape[tensor.index is not None:]
    value = llama.gguf_tensor(tensors[name], _gguf_shape(tensor.pattern, shape), path)
    if tensor.rotary:
      value = llama.unpermute_rotary_rows(value, heads=shape[1])
    value = (einops.rearrange(value, tensor.pattern, **_axis_sizes(tensor.pattern, shape))
             + np.float32(tensor.offset))
    if tensor.index is None:
      values[target] = value.astype(dtype)
    else:
      values.setdefault(target, np.zeros(params[target].shape, dtype))[tensor.index] = value
  return values


def load_tunix_model(path: str | os.PathLike, dtype: Any = jnp.float32
                     ) -> tuple[nnx.Module, tokenizers.Tokenizer, int]:
  """A GGUF file as the tunix model of its architecture (:data:`ARCHITECTURES`).

  Args:
    path: the ``.gguf`` file.
    dtype: the parameters' dtype (dequantised to float32 first).

  Returns:
    ``(model, tokenizer, pad_id)``: the model (called as ``model(tokens, positions, None,
    attention_mask)``), the file's tokenizer (:func:`gguf_tokenizer`) and padding id.

  Raises:
    WeightsError: a file that is missing, truncated or not GGUF; another architecture;
      metadata the tunix model can't run; a missing, unexpected or misshapen tensor.
      Messages name the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsError(f'GGUF file not found: {path}')
  reader = llama.gguf_reader(path)
  arch = llama.gguf_field(reader, 'general.architecture', path)
  if arch not in ARCHITECTURES:
    raise WeightsError(f'{path}: general.architecture is {arch!r}; tunix models are loaded '
                       f'for {sorted(ARCHITECTURES)}')
  build, read_config = ARCHITECTURES[arch]
  config = read_config(reader, path)
  if hasattr(config, 'param_dtype'):  # Gemma3 makes its parameters in it (default bf16).
    config = dataclasses.replace(config, param_dtype=dtype)
  graph, state = nnx.split(nnx.eval_shape(lambda: build(config)))
  state = state.to_pure_dict()
  flat, _ = jax.tree_util.tree_flatten_with_path(state)
  values = read_params(reader, path, arch, {_dotted(keys): leaf for keys, leaf in flat},
                       config.num_layers, dtype)
  state = jax.tree_util.tree_map_with_path(lambda keys, _: jnp.asarray(values[_dotted(keys)]),
                                           state)
  tokenizer = gguf_tokenizer(reader, path)
  return nnx.merge(graph, state), tokenizer, llama.gguf_pad_id(reader, path)


# --------------------------------------------------------------------------------------------
# Tokenizers.
# --------------------------------------------------------------------------------------------

def gguf_tokenizer(reader, path: str) -> tokenizers.Tokenizer:
  """A GGUF file's tokenizer: byte-level BPE (``gpt2``) by :func:`llama.gguf_tokenizer`,
  SentencePiece (``llama``) by :func:`llama.sentencepiece_tokenizer`.

  Raises:
    WeightsError: another ``tokenizer.ggml.model``, or what those refuse.
  """
  return llama.gguf_tokenizer(reader, path)[0]
