"""Backbones by name: one entry point from a config to a :class:`Backbone`.

Each backbone module defines its Flax model, its checkpoint loader (a file to ``(module,
params)``), ``SVE_RULES`` (the leaves SVE decomposes by default) and ``from_config``, which
turns a config's ``model`` section and the number of classes into a :class:`Backbone`,
including how raw examples become model inputs (tokenisation for text, resizing and
normalisation for images). :data:`LOADERS` maps each name to its ``from_config``;
:func:`load_backbone` checks the section (:func:`validate_model_config`) and calls it.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from sve_jax.choices import check_choice
from sve_jax.models import bert
from sve_jax.models import efficientnet_lite
from sve_jax.models import hub
from sve_jax.models import llama
from sve_jax.models import onnx_vit
from sve_jax.models import vit
from sve_jax.models.backbone import adapt_top_blocks
from sve_jax.models.backbone import Backbone

#: Every backbone's loader, by ``config.model.name``: ``(model section, num_classes) ->
#: Backbone``.
LOADERS: dict[str, Callable[[Mapping[str, Any], int], Backbone]] = {
    'bert': bert.from_config,
    'vit': vit.from_config,
    'efficientnet_lite0': efficientnet_lite.from_config,
    'llama': llama.from_config,
}
BACKBONES = tuple(LOADERS)
#: Backbones whose ``config.model.path`` may be a Hugging Face repo id.
HUB_BACKBONES = ('bert', 'vit', 'llama')
#: Backbones that compute in bfloat16 when ``config.model.dtype`` asks for it.
LOW_PRECISION_BACKBONES = ('bert', 'llama')
#: Computation dtypes (params stay float32; SVD factors are float32 in any case).
COMPUTE_DTYPES = ('float32', 'bfloat16')

__all__ = [
    # What a loader returns.
    'Backbone', 'adapt_top_blocks',
    # Backbones by name.
    'BACKBONES', 'COMPUTE_DTYPES', 'HUB_BACKBONES', 'LOADERS', 'load_backbone',
    'validate_model_config',
    # One module per backbone, and the hub.
    'bert', 'efficientnet_lite', 'hub', 'onnx_vit', 'vit',
]


def load_backbone(model: Mapping[str, Any], num_classes: int) -> Backbone:
  """Loads the backbone a config's ``model`` section names (its :data:`LOADERS` entry).

  Args:
    model: ``name``, ``path`` ('' = the offline default where one exists; bert, vit and llama
      also take a Hugging Face repo id, :func:`hub.repo_id`), optional
      ``dropout_rate`` (every dropout rate of the backbone; -1 or absent keeps the
      checkpoint's/preset's own), and per backbone ``pooling``/``max_length``/``dtype``
      (bert), ``prompt``/``verbalizer``/``max_length``/``dtype``/``remat`` (llama),
      ``preset`` (vit; '' with a repo id = the repo's), ``image_size`` (vision), and
      ``adapted_blocks`` (-1 or absent: all; see :func:`backbone.adapt_top_blocks`).
    num_classes: outputs of the fresh head.

  Raises:
    ValueError: unknown backbone name or a missing required path (names the config key).
    weights_io.WeightsError: unreadable weights, or a hub repo that is neither cached nor
      downloadable or has no weights file (names the repo and the files looked for).
  """
  validate_model_config(model)
  backbone = LOADERS[model['name']](model, num_classes)
  return adapt_top_blocks(backbone, int(model.get('adapted_blocks', -1)))


def validate_model_config(model: Mapping[str, Any]) -> None:
  """Cheap checks before any heavy work (names the config key)."""
  check_choice(model['name'], BACKBONES, 'config.model.name')
  rate = model.get('dropout_rate', -1.)
  if rate != -1 and not 0 <= rate < 1:
    raise ValueError(f'config.model.dropout_rate={rate} must be -1 (the backbone\'s own) or '
                     'in [0, 1)')
  adapted = int(model.get('adapted_blocks', -1))
  if adapted == 0 or adapted < -1:
    raise ValueError(f'config.model.adapted_blocks={adapted} must be -1 (all blocks) or the '
                     'number of top blocks to adapt, >= 1')
  dtype = model.get('dtype', 'float32')
  check_choice(dtype, COMPUTE_DTYPES, 'config.model.dtype')
  if dtype != 'float32' and model['name'] not in LOW_PRECISION_BACKBONES:
    raise ValueError(f'config.model.dtype={dtype!r}: only the {LOW_PRECISION_BACKBONES} '
                     f'backbones compute in a lower precision so far; use float32 for '
                     f'{model["name"]}')
  repo = hub.repo_id(model['path'])
  if model['path'] and not repo and not os.path.exists(model['path']):
    raise FileNotFoundError(f'config.model.path={model["path"]!r} does not exist, and is not '
                            f'a Hugging Face repo id ({hub.HUB_PREFIX}<org>/<name> or '
                            '<org>/<name>)')
  if repo and model['name'] not in HUB_BACKBONES:
    raise ValueError(f'config.model.path={model["path"]!r}: weights by Hugging Face repo id '
                     f'are supported for {HUB_BACKBONES}, not {model["name"]}; pass a local '
                     'path')
  if model['name'] == 'llama':
    words = model.get('verbalizer') or ()
    if isinstance(words, str) or not words or not all(isinstance(w, str) for w in words):
      raise ValueError(f'config.model.verbalizer={words!r} must be a tuple of label words, one '
                       "per class, e.g. (' negative', ' neutral', ' positive')")
    if '{text}' not in str(model.get('prompt', '')):
      raise ValueError(f'config.model.prompt={model.get("prompt")!r} must contain {{text}}, '
                       'where the example goes')
  if model['name'] == 'vit' and not model['path']:
    _check_offline_vit(model.get('preset', ''))


def _check_offline_vit(preset: str) -> None:
  """``config.model.path=''`` for a ViT: the preset must ship offline, its package be there."""
  if vit.PRESET_ALIASES.get(preset, preset) not in vit.OFFLINE_PATHS:
    raise ValueError('config.model.path must name a ViT: a Hugging Face repo id such as '
                     f'{hub.HUB_PREFIX}timm/vit_small_patch16_224.dino, a local timm-format '
                     'checkpoint (.safetensors or .npz), or an .onnx file that '
                     "sve_jax.models.onnx_vit reads; '' loads the offline weights of "
                     f'config.model.preset {" or ".join(vit.OFFLINE_ALIASES)}, not {preset!r}')
  try:
    vit.offline_path(preset)
  except ImportError as e:  # a user's setup step, reported in one line (train.py)
    raise ValueError(f"config.model.path='' (preset {preset!r}): {e}") from e
