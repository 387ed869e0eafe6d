r"""The recipe a sweep chose on validation, as config overrides.

A sweep (``benchmarks/sweep.py``) trains one grid setting per folder and records each
setting's config overrides and validation scores in its summary. Settings that set the same
recipe keys (say ``optim.learning_rate`` for ``single_svf``, and
``optim.full_finetune_learning_rate`` for ``single_ft``, in the ``recipe`` grid) form one
family; :func:`recipe_choices` takes each family's setting of lowest validation NLL, so

  python -m benchmarks.quality --config=configs/fmnist_clip_vitb16.py --seeds=3 \
      --recipe_from=benchmarks/results/sweep_recipe_fmnist_clip.json

trains every method at the rates validation chose, with no number copied by hand. The test
split never chooses. This module defines no flags: both benchmarks import it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

#: The validation metric every choice minimises.
SELECTED_ON = 'val_nll'
#: Override keys that say which model a setting trains, not which recipe it tries.
MODEL_KEYS = ('method', 'num_members')


@dataclasses.dataclass(frozen=True)
class Choice:
  """One family's chosen setting.

  Attributes:
    overrides: ``{dotted config key: value}``, the recipe keys of the chosen setting.
    setting: its name in the sweep.
    val_nll: its mean validation NLL.
    at_grid_edge: the chosen value is the family's smallest or largest (one numeric key
      only): a better one may lie outside the grid.
  """
  overrides: Mapping[str, Any]
  setting: str
  val_nll: float
  at_grid_edge: bool


def best_setting(rows: Mapping[str, Mapping[str, Any]]) -> str | None:
  """The setting of lowest mean :data:`SELECTED_ON` (validation NLL) among those with the
  most seeds, or None.

  A mean over fewer seeds is not comparable with the others (seeds differ more than settings
  do), so a pooled or kept row run on fewer seeds is never chosen over fully seeded ones.
  """
  scored = {name: row for name, row in rows.items() if SELECTED_ON in row}
  if not scored:
    return None
  most = max(row.get('seeds', 1) for row in scored.values())
  return min((name for name, row in scored.items() if row.get('seeds', 1) == most),
             key=lambda name: scored[name][SELECTED_ON]['mean'])


def _recipe_keys(row: Mapping[str, Any]) -> tuple[str, ...]:
  """The recipe keys a summary row's setting overrides; () for a setting read from another's
  runs in another averaging mode, which trains nothing of its own."""
  if row.get('shares') or row.get('mode'):
    return ()
  return tuple(sorted(k for k in row.get('overrides', {}) if k not in MODEL_KEYS))


def recipe_choices(summary: Mapping[str, Any]) -> tuple[Choice, ...]:
  """Each family's setting of lowest validation NLL (:func:`best_setting`) in a sweep summary.

  Raises:
    ValueError: ``summary`` is not a sweep summary, holds no setting that overrides a recipe
      key, or two families set the same key.
  """
  rows = summary.get('settings')
  if not isinstance(rows, Mapping):
    raise ValueError('it is not a sweep summary (no "settings")')
  families: dict[tuple[str, ...], dict[str, Any]] = {}
  for name, row in rows.items():
    row_keys = _recipe_keys(row)
    if row_keys and SELECTED_ON in row:
      families.setdefault(row_keys, {})[name] = row
  if not families:
    raise ValueError('none of its settings overrides a recipe key')
  every_key = [k for family_keys in families for k in family_keys]
  if len(every_key) != len(set(every_key)):
    raise ValueError(f'families {sorted(families)} set the same key')
  return tuple(_choose(family_keys, family) for family_keys, family in families.items())


def _choose(keys: tuple[str, ...], family: Mapping[str, Mapping[str, Any]]) -> Choice:
  """The family's :func:`best_setting` (its values of ``keys``), and whether its value is at
  the grid's edge."""
  name = best_setting(family)
  overrides = {k: family[name]['overrides'][k] for k in keys}
  values = [row['overrides'][k] for row in family.values() for k in keys]
  edge = (len(keys) == 1 and len(values) > 2
          and all(isinstance(v, (int, float)) for v in values)
          and next(iter(overrides.values())) in (min(values), max(values)))
  return Choice(overrides, name, family[name][SELECTED_ON]['mean'], edge)


def with_overrides(config, overrides: Mapping[str, Any]):
  """A copy of ``config`` with each ``{dotted key: value}`` set.

  Raises:
    ValueError: a key the config does not have (named).
  """
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node.get(parent)
    if node is None or leaf not in node:
      raise ValueError(f'setting override {key!r}: the config has no such field')
    node[leaf] = value
  return config
