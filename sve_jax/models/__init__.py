"""Backbones by name: one entry point from a config to ``(apply_fn, params, rules)``.

Each backbone module defines its Flax model, its checkpoint loader and ``SVE_RULES``, the
leaves SVE decomposes by default. :func:`load_backbone` turns a config's ``model`` section into
a :class:`Backbone`, including how raw examples become model inputs (tokenisation for text,
resizing and normalisation for images).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import os

import jax
import jax.numpy as jnp
import numpy as np

from sve_jax.models import hub

PyTree = Any
BACKBONES = ('bert', 'vit', 'efficientnet_lite0')
#: Computation dtypes (params stay float32; SVD factors are float32 in any case).
COMPUTE_DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A pretrained model ready for SVE.

  Attributes:
    name: one of :data:`BACKBONES`.
    module: the Flax linen module (with a zero-initialised ``head``).
    params: its params, pretrained weights plus the new head.
    rules: the backbone's ``SVE_RULES`` for :func:`sve_jax.decompose`.
    modality: ``'text'`` or ``'image'``.
    tokenize: text backbones: ``list[str] -> {input_ids, attention_mask, token_type_ids}``.
    image_size: image backbones: input ``(height, width)``.
    image_mean, image_std: image backbones: per-channel statistics on the [0, 1] scale.
    attention_rules: the backbone's ``ATTENTION_RULES`` (SVE rules restricted to the attention
      q, k, v, o kernels), or ``None`` for a backbone without attention.
    dropout_rate: the largest dropout rate :meth:`apply` uses with ``train=True``.
  """
  name: str
  module: Any
  params: PyTree
  rules: tuple
  modality: str
  tokenize: Callable[[list[str]], dict[str, np.ndarray]] | None = None
  image_size: tuple[int, int] | None = None
  image_mean: tuple[float, ...] | None = None
  image_std: tuple[float, ...] | None = None
  attention_rules: tuple | None = None
  dropout_rate: float = 0.

  def apply(self, params: PyTree, inputs: Any, *, train: bool = False,
            rngs: Mapping[str, jax.Array] | None = None) -> jax.Array:
    """The pure forward ``(params, inputs) -> logits``."""
    return self.module.apply({'params': params}, inputs, train=train, rngs=rngs)


def load_backbone(model: Mapping[str, Any], num_classes: int) -> Backbone:
  """Loads the backbone a config's ``model`` section names.

  Args:
    model: ``name``, ``path`` ('' = the offline default where one exists; bert and vit also
      take a Hugging Face repo id, :func:`hub.repo_id`), optional
      ``dropout_rate`` (every dropout rate of the backbone; -1 or absent keeps the
      checkpoint's/preset's own), and per backbone ``pooling``/``max_length`` (bert),
      ``preset`` (vit; '' with a repo id = the repo's), ``image_size`` (vision).
    num_classes: outputs of the fresh head.

  Raises:
    ValueError: unknown backbone name or a missing required path (names the config key).
    weights_io.WeightsError: unreadable weights, or a hub repo that is neither cached nor
      downloadable or has no weights file (names the repo and the files looked for).
  """
  validate_model_config(model)
  name = model['name']
  rate = float(model.get('dropout_rate', -1.))
  repo = hub.repo_id(model['path'])
  if name == 'bert':
    from sve_jax.models import bert, tokenizer as tok  # pylint: disable=g-import-not-at-top
    folder = model['path'] or bert.offline_minilm_path()
    if repo:
      # Configs, tokenizer and sentence-transformers pooling are small .json/.txt files.
      folder, _ = hub.fetch(repo, bert.WEIGHT_FILES, ('*.json', '*.txt'))
    module, params, tokenizer = bert.load_bert(folder, num_classes=num_classes,
                                               pooling=model['pooling'] or None,
                                               dtype=jnp.dtype(model.get('dtype', 'float32')))
    if rate >= 0:
      module = module.clone(dropout_rate=rate, attention_dropout_rate=rate)
    c = module.config
    max_length = int(model['max_length'])
    return Backbone(name, module, params, tuple(bert.SVE_RULES), 'text',
                    tokenize=lambda texts: tok.tokenize(tokenizer, texts, max_length),
                    attention_rules=tuple(bert.ATTENTION_RULES),
                    dropout_rate=rate if rate >= 0 else max(c.hidden_dropout_prob,
                                                            c.attention_probs_dropout_prob))
  size = (int(model['image_size']),) * 2
  if name == 'vit':
    from sve_jax.models import vit  # pylint: disable=g-import-not-at-top
    path, preset = model['path'], model['preset']
    if repo:
      folder, path = hub.fetch(repo, vit.HUB_WEIGHT_FILES)
      preset = _hub_preset(vit.preset_from_timm_config(os.path.join(folder, 'config.json')),
                           preset, repo)
    if rate >= 0:
      preset = dataclasses.replace(vit.get_config(preset), dropout_rate=rate)
    module, params = vit.load_vit(path, preset, num_classes=num_classes, img_size=size)
    return Backbone(name, module, params, tuple(vit.SVE_RULES), 'image', image_size=size,
                    image_mean=tuple(module.config.image_mean),
                    image_std=tuple(module.config.image_std),
                    attention_rules=tuple(vit.ATTENTION_RULES),
                    dropout_rate=module.config.dropout_rate)
  from sve_jax.models import efficientnet_lite as eff  # pylint: disable=g-import-not-at-top
  module, params = eff.load_efficientnet_lite0(
      model['path'] or None, num_classes=num_classes,
      dropout_rate=rate if rate >= 0 else eff.DROPOUT_RATE)
  # The reference feeds (x - 127) / 128 on the 0..255 scale.
  return Backbone(name, module, params, tuple(eff.SVE_RULES), 'image', image_size=size,
                  image_mean=tuple(m / 255. for m in eff.INPUT_MEAN_RGB),
                  image_std=tuple(s / 255. for s in eff.INPUT_STD_RGB),
                  dropout_rate=module.dropout_rate)


def _hub_preset(inferred: str, configured: str, repo: str) -> str:
  """The repo's preset; a configured one must name the same model (alias or full name)."""
  from sve_jax.models import vit  # pylint: disable=g-import-not-at-top
  if configured and vit.PRESET_ALIASES.get(configured, configured) != inferred:
    raise ValueError(f'config.model.preset={configured!r}, but {hub.HUB_PREFIX}{repo} holds '
                     f"{inferred!r} (its config.json); set --config.model.preset='' to use "
                     'the repo\'s, or name a repo with the configured model')
  return inferred


def validate_model_config(model: Mapping[str, Any]) -> None:
  """Cheap checks before any heavy work (names the config key)."""
  if model['name'] not in BACKBONES:
    raise ValueError(f'config.model.name={model["name"]!r} is not a known backbone; '
                     f'expected one of {BACKBONES}')
  rate = model.get('dropout_rate', -1.)
  if rate != -1 and not 0 <= rate < 1:
    raise ValueError(f'config.model.dropout_rate={rate} must be -1 (the backbone\'s own) or '
                     'in [0, 1)')
  dtype = model.get('dtype', 'float32')
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f'config.model.dtype={dtype!r} must be one of {COMPUTE_DTYPES}')
  if dtype != 'float32' and model['name'] != 'bert':
    raise ValueError(f'config.model.dtype={dtype!r}: only the bert backbone computes in a '
                     f'lower precision so far; use float32 for {model["name"]}')
  repo = hub.repo_id(model['path'])
  if model['path'] and not repo and not os.path.exists(model['path']):
    raise FileNotFoundError(f'config.model.path={model["path"]!r} does not exist, and is not '
                            f'a Hugging Face repo id ({hub.HUB_PREFIX}<org>/<name> or '
                            '<org>/<name>)')
  if repo and model['name'] not in ('bert', 'vit'):
    raise ValueError(f'config.model.path={model["path"]!r}: weights by Hugging Face repo id '
                     f'are supported for bert and vit, not {model["name"]}; pass a local path')
  if model['name'] == 'vit' and not model['path']:
    raise ValueError('config.model.path must name a timm ViT: a Hugging Face repo id such as '
                     f'{hub.HUB_PREFIX}timm/vit_small_patch16_224.dino, or a local timm-format '
                     'checkpoint (.safetensors or .npz); none ships offline')
