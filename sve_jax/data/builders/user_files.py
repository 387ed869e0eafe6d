"""What the builders of users' files share: inputs given whole or per split, and labels named late.

`csv_text` and `image_folder` read either one input (a file, a folder) that they split by
seed, or one input per split (`single_or_per_split`); their class names may only be known once
the inputs are read (`label_feature`, `set_label_names`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import tensorflow_datasets as tfds

_Config = TypeVar('_Config')  # a config dataclass


def label_feature(names: Sequence[str] | None) -> tfds.features.ClassLabel:
  """The `label` feature: with `names` when the config gives them, else named later.

  Names unknown until the files are read are set by `set_label_names` in
  `_split_generators`; a prepared copy restores them from `label.labels.txt`.
  """
  return tfds.features.ClassLabel(names=list(names)) if names else tfds.features.ClassLabel()


def set_label_names(info: tfds.core.DatasetInfo, names: Sequence[str]) -> None:
  """Names the classes of a `label_feature` made without names."""
  info.features['label'].names = list(names)


def single_or_per_split(one: str | None, per_split: Iterable[tuple[str, str]] | Mapping[str, str],
                        what: str) -> dict[str | None, str]:
  """`{None: one}` or `{split: path}`; exactly one of the two must be given."""
  if bool(one) == bool(per_split):
    raise ValueError(f'give exactly one of `{what}` (split by fractions) or '
                     f'`split_{what}s` (one per split); got {one!r} and {per_split!r}.')
  return {None: one} if one else dict(per_split)


def absolute_paths(config: _Config, one: str, per_split: str) -> _Config:
  """`config` with its input paths made absolute, so the cwd does not matter."""
  return dataclasses.replace(config, **{
      one: getattr(config, one) and os.path.abspath(getattr(config, one)),
      per_split: tuple((split, os.path.abspath(path))
                       for split, path in getattr(config, per_split))})
