"""Checks of a run's config and workdir: cheap, before any heavy work.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections

from sve_jax import execution
from sve_jax import methods
from sve_jax import models
from sve_jax.data import corruptions
from sve_jax.data import datasets
from sve_jax.eval import metrics
from sve_jax.methods import laplace_lora
from sve_jax.methods import sve
from sve_jax.train import sharding
from sve_jax.train import state as train_state
from sve_jax.train import trunk_cache


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the config key for values that cannot work.

  A value's check belongs to the module that uses it (the method registry, the execution
  paths, the metrics, the schedules, the backbones, the data sets); this calls each with the
  config key, before any heavy work. Bounds on plain numbers are checked here.
  """
  methods.get(config.method).check_adapted_blocks(config.model.get('adapted_blocks', -1))
  _check_bounds(config)
  laplace_lora.check_prior_precisions(config.laplace_prior_precisions)
  sve.check_targets(config.sve_targets, 'config.sve_targets')
  execution.check_execution(config.execution, 'config.execution')
  metrics.check_ensemble_mode(config.ensemble_mode, 'config.ensemble_mode')
  train_state.check_schedule(config.optim.schedule, 'config.optim.schedule')
  sharding.check_frozen_layout(config.mesh.frozen, 'config.mesh.frozen')
  models.validate_model_config(config.model)
  _check_dataset_name(config.data.name, 'config.data.name')
  datasets.check_options(config.data.name, config.data.options, 'config.data.options')
  if config.ood.name:
    _check_dataset_name(config.ood.name, 'config.ood.name')
    datasets.check_options(config.ood.name, config.ood.options, 'config.ood.options')
  _check_ood_extras(config.ood)
  _check_shift(config.get('shift'))
  trunk_cache.check_config(config)


def _check_ood_extras(ood) -> None:
  """The OOD options beyond ``config.ood.name``: they need an OOD set, and known names.

  ``feature_scores`` is not among them: it says how an OOD set is scored, where there is one
  (the default config turns it on, and ``--config.ood.name=''`` then scores nothing).
  """
  extra = tuple(ood.get('extra_names', ()))
  wanted = [key for key in ('every_validation',) if ood.get(key)]
  if not ood.name and (extra or wanted):
    keys = (['extra_names'] if extra else []) + wanted
    raise ValueError(f"config.ood.{', config.ood.'.join(keys)} need an OOD set: set "
                     'config.ood.name')
  for name in extra:
    _check_dataset_name(name, 'config.ood.extra_names')
  if len(set((ood.name,) + extra)) != 1 + len(extra):
    raise ValueError(f'config.ood.extra_names={extra!r} repeats a set (config.ood.name is '
                     f'{ood.name!r})')


def _check_shift(shift) -> None:
  """``config.shift``'s values (none to check in a config without the section). Whether the
  corruptions fit the data's modality is checked once the backbone is known
  (:func:`sve_jax.train.run.plan_shift`)."""
  if shift is None:
    return
  if not isinstance(shift.enabled, bool):
    raise ValueError(f'config.shift.enabled={shift.enabled!r} must be True or False')
  corruptions.check_names(tuple(shift.corruptions), 'config.shift.corruptions')
  corruptions.check_severities(tuple(shift.severities), 'config.shift.severities')
  if not (shift.max_examples >= 1 or shift.max_examples == -1):
    raise ValueError(f'config.shift.max_examples={shift.max_examples} must be >= 1, or -1 for '
                     'the whole test split')


def _check_bounds(config) -> None:
  """Raises ValueError naming the first config number out of its range."""
  checks = [
      (config.num_members >= 1, f'config.num_members={config.num_members} must be >= 1'),
      (config.noise_std >= 0, f'config.noise_std={config.noise_std} must be >= 0'),
      (config.optim.learning_rate > 0,
       f'config.optim.learning_rate={config.optim.learning_rate} must be > 0'),
      *((config.optim[key] > 0 or config.optim[key] == -1,
         f'config.optim.{key}={config.optim[key]} must be > 0, or -1 for '
         'config.optim.learning_rate')
        for key in ('full_finetune_learning_rate', 'lora_learning_rate')),  # per-method rates
      (0 <= config.optim.warmup_fraction < 1,
       f'config.optim.warmup_fraction={config.optim.warmup_fraction} must be in [0, 1)'),
      (config.num_epochs >= 1, f'config.num_epochs={config.num_epochs} must be >= 1'),
      (config.lora_rank >= 1, f'config.lora_rank={config.lora_rank} must be >= 1'),
      (config.posterior_fit_examples >= 1 or config.posterior_fit_examples == -1,
       f'config.posterior_fit_examples={config.posterior_fit_examples} must be >= 1, or -1 '
       'for all'),
      (config.batch_size >= 1, f'config.batch_size={config.batch_size} must be >= 1'),
      (config.eval_batch_size >= 1,
       f'config.eval_batch_size={config.eval_batch_size} must be >= 1'),
      (config.data.num_workers >= 0,
       f'config.data.num_workers={config.data.num_workers} must be >= 0 (0: no workers)'),
      (config.head_init_std >= 0 or config.head_init_std == -1,
       f'config.head_init_std={config.head_init_std} must be >= 0, or -1 for noise_std'),
      (isinstance(config.member_data_order, bool),
       f'config.member_data_order={config.member_data_order!r} must be True or False'),
      (isinstance(config.sve_dropout, bool),
       f'config.sve_dropout={config.sve_dropout!r} must be True or False'),
      (isinstance(config.steps_per_execution, int) and config.steps_per_execution >= 1,
       f'config.steps_per_execution={config.steps_per_execution!r} must be an integer >= 1'),
      (config.eval_every_steps >= 0,
       f'config.eval_every_steps={config.eval_every_steps} must be >= 0 (0: epoch ends only)'),
      (config.checkpoint.every_steps >= 0,
       f'config.checkpoint.every_steps={config.checkpoint.every_steps} must be >= 0'),
      (config.checkpoint.every_minutes >= 0,
       f'config.checkpoint.every_minutes={config.checkpoint.every_minutes} must be >= 0'),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(message)


def check_workdir_writable(workdir: str) -> None:
  """Creates ``workdir`` and writes a probe file there; raises a clear error if it cannot.

  Raises:
    PermissionError or OSError: naming ``--workdir`` and the reason, before any heavy work.
  """
  probe = os.path.join(workdir, f'.write_probe_{os.getpid()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise type(e)(e.errno, f'--workdir={workdir} is not writable ({e.strerror}); choose a '
                  'folder this user can create files in', e.filename) from e


def run_identity(config: ml_collections.ConfigDict, num_members: int) -> dict[str, Any]:
  """What a workdir's checkpoints must match to be resumed: backbone, method, members."""
  return {'method': config.method, 'backbone': config.model.name,
          'model_path': config.model.path, 'model_preset': config.model.preset,
          'num_members': num_members,
          'adapted_blocks': int(config.model.get('adapted_blocks', -1))}


def _check_dataset_name(name: str, key: str) -> None:
  """Raises unless ``name`` is a local builder or a registered tfds catalog data set."""
  if not datasets.is_known_dataset(name):
    raise ValueError(f'{key}={name!r} is neither a local data set '
                     f'{sorted(datasets.builders.LOCAL_BUILDERS)} nor a tfds catalog name')
