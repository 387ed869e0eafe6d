"""Preprocessing as pure functions on NumPy batches.

Batches come from `pipeline.train_dataset` / `eval_dataset`. The `*_transform`
factories return `batch -> model batch` functions for those datasets: a model
batch holds only arrays (`image` float32 or the tokenizer's arrays, `label`
int32, and `mask` for evaluation), ready for `jax.device_put`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Mapping, Protocol

import numpy as np
from PIL import Image

from sve_jax import class_mask
from sve_jax.data import pipeline
# ImageNet's statistics are the default of a bare image transform; backbones pass their own.
from sve_jax.image_stats import IMAGENET_MEAN
from sve_jax.image_stats import IMAGENET_STD
# Defaults of torchvision's RandomResizedCrop, used by the paper's vision runs.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)

Tokenize = Callable[[list[str]], dict[str, np.ndarray]]


class Preprocessing(Protocol):
  """What the data layer reads of a backbone (a :class:`sve_jax.models.Backbone` has it all)."""
  modality: str  # 'text' or 'image'
  tokenize: Tokenize | None  # text
  image_size: tuple[int, int] | None  # images: (height, width)
  image_mean: tuple[float, ...] | None  # images: per channel, on the [0, 1] scale
  image_std: tuple[float, ...] | None


# ---------------------------------------------------------------- text


def decode_texts(values: Sequence[bytes | str | np.ndarray]) -> list[str]:
  """Text features as `str`: tfds returns UTF-8 `bytes`, its mocks `str`."""
  texts = []
  for value in values:
    value = value.item() if isinstance(value, np.ndarray) else value
    texts.append(value.decode('utf-8') if isinstance(value, bytes) else str(value))
  return texts


def text_transform(tokenize: Tokenize, *, text_key: str = 'text',
                   label_key: str | None = 'label') -> pipeline.Transform:
  """`batch -> {**tokenize(texts), 'label', 'mask'}` for a text classifier.

  A batch holding `class_mask.KEY` (multiple choice: the classes each example offers) keeps
  it, as bool, beside the tokens: the backbone masks the absent classes' logits.

  Args:
    tokenize: maps a list of strings to arrays with a leading batch axis
      (e.g. `input_ids`, `attention_mask`), supplied by the model.
    text_key: the batch's text feature (`text`, or `sentence` for SST-2).
    label_key: the label feature, or None for unlabelled (OOD) data.
  """
  def transform(batch: pipeline.Batch) -> pipeline.Batch:
    out = dict(tokenize(decode_texts(batch[text_key])))
    if class_mask.KEY in batch:
      out[class_mask.KEY] = np.asarray(batch[class_mask.KEY], bool)
    return _with_label_and_mask(out, batch, label_key)
  return transform


# ---------------------------------------------------------------- images


def _checked_uint8(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f'expected a uint8 (height, width, channels) image, got '
                     f'{image.dtype} {image.shape}.')
  return image


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear (PIL, antialiased when shrinking) resize of one uint8 HWC image."""
  image = _checked_uint8(image)
  if image.shape[:2] == tuple(size):
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  resized = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))
  return resized.reshape(size[0], size[1], channels)


def resize_images(images: Sequence[np.ndarray] | np.ndarray,
                  size: tuple[int, int]) -> np.ndarray:
  """Resizes uint8 HWC images (any sizes) to one `(B, h, w, C)` uint8 array."""
  return np.stack([_resize_image(image, size) for image in images])


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
  """Repeats grey images to `channels` (e.g. Fashion-MNIST into an RGB model)."""
  if images.shape[-1] == channels:
    return images
  if images.shape[-1] != 1:
    raise ValueError(f'cannot convert {images.shape[-1]} channels to {channels}.')
  return np.repeat(images, channels, axis=-1)


def normalize_images(images: np.ndarray, mean: Sequence[float],
                     std: Sequence[float]) -> np.ndarray:
  """`(images / 255 - mean) / std` per channel, as float32."""
  scaled = np.asarray(images, np.float32) / 255.0
  return (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: tuple[float, float] = CROP_SCALE,
                            ratio: tuple[float, float] = CROP_RATIO
                            ) -> tuple[int, int, int, int]:
  """`(top, left, h, w)` of a random crop, as torchvision's RandomResizedCrop.

  Up to ten draws of an area fraction in `scale` and a log-uniform aspect ratio
  in `ratio`; if none fits, the largest centred crop with a ratio in range.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = round(math.sqrt(target_area * aspect))
    h = round(math.sqrt(target_area / aspect))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, round(width / min(ratio))
  elif in_ratio > max(ratio):
    w, h = round(height * max(ratio)), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def _augment_image(image: np.ndarray, seed: np.ndarray, size: tuple[int, int],
                   scale: tuple[float, float] = CROP_SCALE,
                   ratio: tuple[float, float] = CROP_RATIO) -> np.ndarray:
  """Random resized crop to `size`, then a horizontal flip with probability 1/2.

  Args:
    image: uint8 HWC.
    seed: the example's seed (`pipeline.example_seeds` row); same seed, same
      crop and flip.
    size: output `(height, width)`.
    scale, ratio: crop area fraction and aspect-ratio ranges.
  """
  image = _checked_uint8(image)
  rng = np.random.default_rng(np.asarray(seed, np.uint32))
  top, left, h, w = random_resized_crop_box(*image.shape[:2], rng, scale, ratio)
  crop = _resize_image(image[top:top + h, left:left + w], size)
  return crop[:, ::-1] if rng.random() < 0.5 else crop


def augment_images(images: Sequence[np.ndarray] | np.ndarray, seeds: np.ndarray,
                   size: tuple[int, int], scale: tuple[float, float] = CROP_SCALE,
                   ratio: tuple[float, float] = CROP_RATIO) -> np.ndarray:
  """`_augment_image` for each image with its seed row; `(B, h, w, C)` uint8."""
  return np.stack([_augment_image(image, seed, size, scale, ratio)
                   for image, seed in zip(images, seeds)])


def image_transform(*, size: tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, augment: bool = False,
                    channels: int | None = None, image_key: str = 'image',
                    label_key: str | None = 'label') -> pipeline.Transform:
  """`batch -> {'image' float32 (B, h, w, C), 'label', 'mask'}` for a vision model.

  Args:
    size: model input `(height, width)`.
    mean, std: per-channel normalisation after scaling to [0, 1].
    augment: random resized crop + horizontal flip from the batch's
      `example_seed` (training batches); otherwise a plain resize.
    channels: repeat grey images to this many channels (None: keep).
    image_key: the batch's image feature.
    label_key: the label feature, or None for unlabelled data.
  """
  def transform(batch: pipeline.Batch) -> pipeline.Batch:
    images = batch[image_key]
    if augment and 'example_seed' not in batch:
      raise ValueError('image_transform(augment=True) needs training batches '
                       'from pipeline.train_dataset (they carry `example_seed`).')
    if augment:
      images = augment_images(images, batch['example_seed'], size)
    else:
      images = resize_images(images, size)
    if channels is not None:
      images = to_channels(images, channels)
    out = {'image': normalize_images(images, mean, std)}
    return _with_label_and_mask(out, batch, label_key)
  return transform


def _with_label_and_mask(out: dict[str, Any], batch: pipeline.Batch,
                         label_key: str | None) -> dict[str, Any]:
  """Adds the label (int32, as JAX uses by default) and any eval `mask`."""
  if label_key is not None:
    out['label'] = np.asarray(batch[label_key], np.int32)
  if 'mask' in batch:
    out['mask'] = batch['mask']
  return out


# ---------------------------------------------------------------- per backbone


_LABEL_AND_MASK = ('label', 'mask')


def make_transform(backbone: Preprocessing, input_key: str, label_key: str | None, *,
                   augment: bool = False) -> pipeline.Transform:
  """The backbone's preprocessing of one raw batch, regrouped for the steps.

  Args:
    backbone: a :class:`sve_jax.models.Backbone`.
    input_key: the dataset's input feature (``text``, ``sentence`` or ``image``).
    label_key: its label feature, or ``None`` for unlabelled (OOD) data.
    augment: vision training augmentation (random resized crop + flip, seeded per example).
  """
  if backbone.modality == 'text':
    inner = text_transform(backbone.tokenize, text_key=input_key, label_key=label_key)
  else:
    inner = image_transform(size=backbone.image_size, mean=backbone.image_mean,
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
