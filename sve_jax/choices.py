"""Checking a configured name against the names a module knows."""
from __future__ import annotations

from typing import Any, Sequence


def check_choice(value: Any, choices: Sequence[Any], key: str) -> None:
  """Raises ValueError naming ``key`` (e.g. ``config.execution``) unless ``value`` is one of
  ``choices``."""
  if value not in choices:
    raise ValueError(f'{key}={value!r} must be one of {tuple(choices)}')
