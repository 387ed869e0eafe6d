"""Corrupted copies of a split, for evaluation under distribution shift.

The corruptions of each modality live in their own module: :mod:`image_corruptions`
(ImageNet-C's, on the uint8 image) and :mod:`text_noise` (character noise, on the text).
This module names them by modality, checks configured names, and gives
:class:`CorruptedSource`: a random-access view of a source whose every example's input is
corrupted, before the backbone's own transform (resize and normalisation, or tokenisation).

Example ``i`` of a view is corrupted with the seed :func:`example_seed` of ``(seed, name,
severity, i)``: the same on every read, in any batch, on any process.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from sve_jax.data import image_corruptions
from sve_jax.data import pipeline
from sve_jax.data import text_noise
from sve_jax.data import transforms

SEVERITIES = image_corruptions.SEVERITIES  # text_noise.RATES has one rate for each
#: Every corruption of each input modality (``Backbone.modality``).
BY_MODALITY = {'image': image_corruptions.CORRUPTIONS, 'text': text_noise.CORRUPTIONS}
#: What a run evaluates when the config names none: ImageNet-C's 15 for images, every text
#: noise for text.
DEFAULTS = {'image': image_corruptions.BENCHMARK, 'text': text_noise.CORRUPTIONS}
ALL = tuple(name for names in BY_MODALITY.values() for name in names)


def family(name: str) -> str:
  """The family of corruption ``name``: ImageNet-C's (noise, blur, weather, digital) for
  images, ``characters`` for text."""
  return image_corruptions.FAMILIES.get(name, 'characters')


def check_names(names: Sequence[str], key: str, modality: str | None = None) -> None:
  """Raises ValueError naming ``key`` unless ``names`` are known corruptions without repeats
  (of ``modality``, when given)."""
  known = ALL if modality is None else BY_MODALITY[modality]
  unknown = [name for name in names if name not in known]
  if unknown:
    scope = 'a known corruption' if modality is None else f'a corruption of {modality} data'
    raise ValueError(f'{key}: {unknown[0]!r} is not {scope}; choose from {known}')
  if len(set(names)) != len(names):
    raise ValueError(f'{key}={tuple(names)!r} repeats a corruption')


def check_severities(severities: Sequence[int], key: str) -> None:
  """Raises ValueError naming ``key`` unless ``severities`` are distinct integers in 1-5."""
  if not severities or any(s not in SEVERITIES or isinstance(s, bool) for s in severities) or (
      len(set(severities)) != len(severities)):
    raise ValueError(f'{key}={tuple(severities)!r} must be distinct integers in [1, 5]')


def example_seed(seed: int, name: str, severity: int, index: int) -> int:
  """The seed (in ``[0, 2**32)``) that corrupts example ``index`` with ``name`` at
  ``severity``: independent streams per run seed, corruption, severity and example."""
  entropy = [seed, zlib.crc32(name.encode()), severity, index]
  return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def corrupt(value: Any, name: str, severity: int, seed: int) -> Any:
  """One input under corruption ``name``: an image (uint8 HWC) by
  :func:`image_corruptions.corrupt_image`, a text (``str`` or UTF-8 ``bytes``; a ``str``
  comes back) by :func:`text_noise.corrupt_text`."""
  if name in image_corruptions.FAMILIES:
    return image_corruptions.corrupt_image(value, name, severity, seed)
  return text_noise.corrupt_text(transforms.decode_texts([value])[0], name, severity, seed)


class Corruption(NamedTuple):
  """What a :class:`CorruptedSource` does: corruption ``name`` at ``severity``, drawn from
  the run's ``seed``."""
  name: str
  severity: int
  seed: int


class CorruptedSource(Sequence):
  """``source`` with feature ``input_key`` of example ``i`` replaced by :func:`corrupt` with
  the seed :func:`example_seed` of ``(corruption.seed, name, severity, i)``; the other
  features (the label) unchanged."""

  def __init__(self, source: pipeline.Source, input_key: str, corruption: Corruption):
    self.source = source
    self.input_key = input_key
    self.corruption = corruption

  def __len__(self) -> int:
    return len(self.source)

  def _corrupted(self, example: dict[str, Any], index: int) -> dict[str, Any]:
    name, severity, seed = self.corruption
    value = corrupt(example[self.input_key], name, severity,
                    example_seed(seed, name, severity, index))
    return {**example, self.input_key: value}

  def __getitem__(self, i):
    return self._corrupted(self.source[int(i)], int(i))

  def __getitems__(self, keys: Sequence[int]) -> list[dict[str, Any]]:
    return [self._corrupted(example, int(i))
            for example, i in zip(pipeline.read_examples(self.source, keys), keys)]
