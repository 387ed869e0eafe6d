"""The trunk feature cache: the trunk's outputs on the training split, computed once.

With ``config.model.adapted_blocks = K < L`` the bottom ``L - K`` blocks (the trunk) are the
pretrained model, the same for every member. When nothing random touches them, their output
on a training example is also the same every epoch. ``config.trunk_cache = True`` then runs
the trunk once over the training split, before training, keeps its outputs in host memory
(:class:`CachedSource`), and trains on them: every step runs only the top K blocks
(:meth:`sve_jax.models.Backbone.apply` on ``{TRUNK_STATE: ...}``), for every member, and with
``member_data_order`` each member's own examples are looked up, not recomputed.

Cost: host memory for one trunk output per training example, ``T · D`` floats plus the
mask for text (MiniLM-L6 at 40 tokens: 61 KB a tweet, 98 MB for the default's 1,600;
SmolLM2 at 64 tokens: 147 KB a prompt), ``tokens · D`` for images. It is estimated before
anything runs and refused above ``config.trunk_cache_max_gb``.

With every block adapted (K = L, the default) the trunk is the embeddings alone: the cache
is allowed, and saves little. It is refused, in one line naming the reason (:func:`check`),
when the backbone has no block stack (EfficientNet), or when the trunk is not deterministic in
training: dropout (``sve_dropout``, or LoRA-Ensemble and BatchEnsemble on a backbone with
dropout), or augmentation (``config.data.augment``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
import tqdm

from sve_jax import class_mask
from sve_jax.data import pipeline
from sve_jax.models.backbone import Backbone
from sve_jax.models.backbone import TRUNK_STATE

#: Prefix of the flattened trunk outputs in a cached example.
_PREFIX = 'trunk/'


def check_config(config: Mapping[str, Any]) -> None:
  """What the config alone tells: a cache needs a trunk and no augmentation. Raises
  ValueError naming ``config.trunk_cache`` and the reason."""
  if not config.get('trunk_cache', False):
    return
  if config['data'].get('augment', False):
    _refuse('config.data.augment changes an example\'s trunk output every epoch; turn '
            'augmentation off to cache')
  if not config.get('trunk_cache_max_gb', 0) > 0:
    _refuse(f'config.trunk_cache_max_gb={config.get("trunk_cache_max_gb")} must be > 0')


def check(config: Mapping[str, Any], backbone: Backbone, dropout_in_training: bool) -> None:
  """:func:`check_config`, then what the built backbone and method tell: a block stack, and
  no dropout in the training forward."""
  if not config.get('trunk_cache', False):
    return
  check_config(config)
  if backbone.num_blocks is None:
    _refuse(f'the {backbone.name} backbone has no stack of transformer blocks, so no trunk')
  if dropout_in_training:
    _refuse(f'{config["method"]} trains with the backbone\'s dropout (rate '
            f'{backbone.dropout_rate}), which changes the trunk\'s output every step; set '
            'config.model.dropout_rate=0 (or config.sve_dropout=False) to cache')


def _refuse(reason: str):
  raise ValueError(f'config.trunk_cache=True: {reason}')


def cache_bytes(backbone: Backbone, batch_inputs: Any, num_examples: int) -> int:
  """Host bytes the trunk outputs of ``num_examples`` examples take, from the abstract shapes
  of one batch (``jax.eval_shape``: nothing is computed)."""
  shapes = jax.eval_shape(backbone.apply_trunk, backbone.params, batch_inputs)
  rows = jax.tree_util.tree_leaves(batch_inputs)[0].shape[0]
  per_batch = sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))
  return int(per_batch // rows * num_examples)


class CachedSource(Sequence):
  """A random-access training source of trunk outputs: example ``i`` is
  ``{'trunk/<name>': output, 'label': label}`` (and the class mask, for multiple choice)."""

  def __init__(self, columns: Mapping[str, np.ndarray]):
    self.columns = dict(columns)
    self._length = len(next(iter(self.columns.values())))

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, i):
    return {k: v[i] for k, v in self.columns.items()}

  def __getitems__(self, keys: Sequence[int]) -> list[dict[str, Any]]:
    keys = np.asarray(keys)
    gathered = {k: v[keys] for k, v in self.columns.items()}
    return [{k: v[j] for k, v in gathered.items()} for j in range(len(keys))]

  @property
  def nbytes(self) -> int:
    return int(sum(v.nbytes for v in self.columns.values()))


def to_train_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
  """The training transform of a :class:`CachedSource`: collated examples to the steps'
  ``{'inputs': {TRUNK_STATE: ...}, 'label'}``."""
  state = {k[len(_PREFIX):]: v for k, v in batch.items() if k.startswith(_PREFIX)}
  inputs = {TRUNK_STATE: state}
  if class_mask.KEY in batch:
    inputs[class_mask.KEY] = batch[class_mask.KEY]
  return {'inputs': inputs, 'label': batch['label']}


def build(backbone: Backbone, source: Any, transform: pipeline.Transform, batch_size: int,
          max_bytes: int) -> CachedSource:
  """Runs the trunk once over ``source`` (``transform``: the evaluation transform, no
  augmentation) and keeps its outputs, with the labels, in host memory.

  Raises:
    ValueError: the cache would exceed ``max_bytes`` (``config.trunk_cache_max_gb``); says
      how much it needs, before anything is computed.
  """
  batches = pipeline.eval_batches(source, global_batch_size=batch_size, transform=transform)
  first = next(batches)
  needed = cache_bytes(backbone, first['inputs'], len(source))
  if needed > max_bytes:
    raise ValueError(f'config.trunk_cache=True: the trunk outputs of {len(source)} training '
                     f'examples need {needed / 2**30:.2f} GiB of host memory, over '
                     f'config.trunk_cache_max_gb={max_bytes / 2**30:g}; raise it, or cache '
                     'fewer examples or tokens')
  trunk = jax.jit(backbone.apply_trunk)
  parts: dict[str, list[np.ndarray]] = {}
  total = pipeline.num_eval_batches(len(source), batch_size)
  for batch in tqdm.tqdm(_chain(first, batches), total=total, desc='trunk cache'):
    real = np.asarray(batch['mask'])
    outputs = jax.device_get(trunk(backbone.params, batch['inputs']))
    columns = {_PREFIX + k: v for k, v in outputs.items()}
    columns['label'] = batch['label']
    _, mask = class_mask.split_inputs(batch['inputs'])
    if mask is not None:
      columns[class_mask.KEY] = mask
    for k, v in columns.items():
      parts.setdefault(k, []).append(np.asarray(v)[real])
  return CachedSource({k: np.concatenate(v) for k, v in parts.items()})


def _chain(first, rest):
  yield first
  yield from rest
