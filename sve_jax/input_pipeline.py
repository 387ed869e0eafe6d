"""Glue between the data layer and a backbone: raw batches -> ``{'inputs', 'label', 'mask'}``."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sve_jax.data import pipeline
from sve_jax.data import preprocess

_LABEL_AND_MASK = ('label', 'mask')


def make_transform(backbone, input_key: str, label_key: str | None, *,
                   augment: bool = False) -> pipeline.Transform:
  """The backbone's preprocessing of one raw batch, regrouped for the steps.

  Args:
    backbone: a :class:`sve_jax.models.Backbone`.
    input_key: the dataset's input feature (``text``, ``sentence`` or ``image``).
    label_key: its label feature, or ``None`` for unlabelled (OOD) data.
    augment: vision training augmentation (random resized crop + flip, seeded per example).
  """
  if backbone.modality == 'text':
    inner = preprocess.text_transform(backbone.tokenize, text_key=input_key,
                                      label_key=label_key)
  else:
    inner = preprocess.image_transform(size=backbone.image_size, mean=backbone.image_mean,
                                       std=backbone.image_std, augment=augment, channels=3,
                                       image_key=input_key, label_key=label_key)

  def transform(batch: Mapping[str, Any]) -> dict[str, Any]:
    out = inner(batch)
    features = {k: v for k, v in out.items() if k not in _LABEL_AND_MASK}
    grouped = {'inputs': features['image'] if backbone.modality == 'image' else features}
    grouped['label'] = out.get('label', np.zeros(len(batch[input_key]), np.int32))
    if 'mask' in out:
      grouped['mask'] = out['mask']
    return grouped

  return transform
