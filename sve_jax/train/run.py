"""One run from a config: mesh → data → backbone → method → state → loop → report.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
import tensorflow_datasets as tfds

from sve_jax import ensemble
from sve_jax import methods
from sve_jax import models
from sve_jax.data import datasets
from sve_jax.data import pipeline
from sve_jax.data import transforms
from sve_jax.eval import metrics as metrics_lib
from sve_jax.eval import report
from sve_jax.train import checkpoint as ckpt
from sve_jax.train import sharding
from sve_jax.train import state as train_state
from sve_jax.train import steps
from sve_jax.train.checks import check_workdir_writable, run_identity, validate_config
from sve_jax.train.evaluate import make_evaluate
from sve_jax.train.loop import _train


@contextlib.contextmanager
def process_zero_first(name: str):
  """Runs the block on process 0, then on the other processes (a barrier named ``name``)."""
  if jax.process_count() > 1 and jax.process_index() != 0:
    multihost_utils.sync_global_devices(name)
  yield
  if jax.process_count() > 1 and jax.process_index() == 0:
    multihost_utils.sync_global_devices(name)


def data_dir_for(config, workdir: str) -> str:
  return config.data.data_dir or os.path.join(os.path.dirname(os.path.abspath(workdir)),
                                              'tfds_data')


def _cap(source, max_examples: int, seed: int):
  return pipeline.subsample(source, None if max_examples < 0 else max_examples, seed)


def _data_options(section, seed: int) -> dict[str, Any]:
  """A config's data/ood section as :func:`datasets.get_dataset` options."""
  options = {'name': section.name, **section.options.to_dict()}
  if section.get('splits') is not None:
    options['splits'] = section.splits.to_dict()
  if section.get('mock_examples'):
    options['mock_examples'] = section.mock_examples
  if section.get('download'):
    options['download'] = True
  if section.get('max_train_examples', -1) >= 0:
    options['max_train_examples'] = section.max_train_examples
    options['subsample_seed'] = seed
  return options


def load_data(config, workdir: str):
  """``(dataset, {role: source}, (ood_dataset, ood_source) or None)`` with caps applied."""
  data_dir = data_dir_for(config, workdir)
  d = config.data
  dataset = datasets.get_dataset(_data_options(d, config.seed), data_dir)
  roles = {'train': 'train', 'validation': 'validation', 'test': 'test'}
  missing = [r for r in roles if r not in dataset.splits]
  if missing:
    raise ValueError(f'config.data.name={d.name!r} has splits {sorted(dataset.splits)}; '
                     f'need {missing} too (set config.data.splits)')
  sources = {r: dataset.splits[r] for r in roles}
  for role in ('validation', 'test'):
    sources[role] = _cap(sources[role], d.max_eval_examples, config.seed)
  ood = None
  if config.ood.name:
    ood_options = _data_options(config.ood, config.seed)
    ood_options['splits'] = {config.ood.split: config.ood.split}
    ood_dataset = datasets.get_dataset(ood_options, data_dir)
    ood_source = _cap(ood_dataset.splits[config.ood.split], d.max_eval_examples, config.seed)
    ood = (ood_dataset, ood_source)
  return dataset, sources, ood


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def run(config, workdir: str, mode: str = 'train') -> dict[str, Any] | None:
  """Trains (``mode='train'``) and/or evaluates; returns the results dict."""
  # --- Config and devices -------------------------------------------------------------------
  validate_config(config)
  tfds.disable_progress_bar()
  sharding.maybe_initialize_distributed(config.distributed.coordinator_address or None,
                                        config.distributed.num_processes,
                                        config.distributed.process_id)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.member)
  sharding.check_batch_divisible(config.batch_size, mesh)
  sharding.check_batch_divisible(config.eval_batch_size, mesh)
  members = methods.num_members_for(config.method, config.num_members)
  sharding.check_members_divisible(members, mesh)
  trained = methods.trained_members_for(config.method, config.num_members)
  if trained % mesh.shape[sharding.MEMBER]:
    raise ValueError(f'config.method={config.method!r} trains {trained} model(s), which do not '
                     f'split over config.mesh.member={mesh.shape[sharding.MEMBER]}; set it to 1')
  check_workdir_writable(workdir)
  identity = run_identity(config, members)
  checkpointer = ckpt.Checkpointer(workdir, keep=config.checkpoint.keep,
                                   asynchronous=config.checkpoint.asynchronous)
  checkpointer.check_identity(identity)
  if mode == 'eval' and not checkpointer.best.all_steps():
    raise ckpt.CheckpointError(f'--mode=eval: no best checkpoint under {workdir}; train first')

  # --- Data and backbone --------------------------------------------------------------------
  # Process 0 prepares the data first: processes sharing a data_dir must not race to write it.
  with process_zero_first('data prepared'):
    dataset, sources, ood = load_data(config, workdir)
  backbone = models.load_backbone(config.model, num_classes=dataset.num_classes)
  train_transform = transforms.make_transform(
      backbone, dataset.input_key, dataset.label_key, augment=config.data.augment)
  eval_transform = transforms.make_transform(backbone, dataset.input_key, dataset.label_key)

  # --- Method: decompose and initialise members ---------------------------------------------
  rng = jax.random.key(config.seed)
  init_rng, state_rng = jax.random.split(rng)
  t0 = time.time()
  setup = methods.build(config.method, backbone, config, init_rng)
  logging.info('%s: built in %.1fs; backbone %d params, %d trainable per member',
               config.method, time.time() - t0, setup.backbone_params,
               setup.trainable_per_member)
  fingerprint = ckpt.factors_fingerprint(setup.frozen)

  steps_per_epoch = pipeline.steps_per_epoch(len(sources['train']), config.batch_size)
  total_steps = steps_per_epoch * config.num_epochs
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)
  learning_rate = methods.learning_rate_for(config.method, config.optim)
  logging.info('%s: peak learning rate %g', config.method, learning_rate)
  optimizer = train_state.make_optimizer(
      learning_rate, total_steps=total_steps,
      schedule=train_state.schedule_for(config.optim.schedule, learning_rate, total_steps,
                                        config.optim.warmup_fraction),
      weight_decay=config.optim.weight_decay, clip_norm=config.optim.clip_norm)
  state = train_state.create_train_state(setup.trainables, optimizer, state_rng)
  frozen = sharding.place(setup.frozen, sharding.replicated_shardings(mesh, setup.frozen))
  state = sharding.place(state, sharding.state_shardings(mesh, state))
  abstract_state = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)

  train_step = sharding.jit_train_step(steps.make_train_step(setup.forward, optimizer), mesh,
                                       state, setup.frozen, setup.per_member_data)
  evaluate = make_evaluate(setup, backbone, state.trainables, frozen, mesh,
                           config.eval_batch_size, sources['validation'], eval_transform)

  def singular_value_change(trainables) -> dict[str, float]:
    """SVE family: how far the members' s moved from the pretrained s (else nothing)."""
    if setup.pretrained_s is None:
      return {}
    return {'singular_value_change': ensemble.singular_value_change(
        setup.frozen, setup.pretrained_s, sharding.to_host(trainables))}  # collective

  def validate(trainables) -> dict[str, float]:
    """Ensemble, members' mean and diversity on the validation split, and the s movement."""
    val = evaluate(trainables, source=sources['validation'])
    return {**metrics_lib.ensemble_and_members(val.logits, val.labels,
                                               mode=config.ensemble_mode),
            **singular_value_change(trainables)}

  # --- Train --------------------------------------------------------------------------------
  if mode == 'train':
    state = _train(config, workdir, checkpointer, state, abstract_state, frozen, train_step,
                   validate, sources, train_transform, total_steps, steps_per_epoch,
                   fingerprint, mesh, identity,
                   member_streams=members if setup.per_member_data else 0)

  # --- Evaluate the best checkpoint and report ----------------------------------------------
  best_state, best_meta = checkpointer.restore_best(abstract_state)
  ckpt.check_fingerprint(best_meta, setup.frozen, f'{workdir}/checkpoints/best')
  val_logits, val_labels, _ = evaluate(best_state.trainables, source=sources['validation'])
  test_logits, test_labels, test_agreement = evaluate(best_state.trainables,
                                                      source=sources['test'])
  ood_logits = None
  if ood is not None:
    ood_dataset, ood_source = ood
    ood_logits, _, _ = evaluate(best_state.trainables, source=ood_source,
                             transform=transforms.make_transform(
                                 backbone, ood_dataset.input_key, None))
  results = report.build_results(
      method=config.method, val_logits=val_logits, val_labels=val_labels,
      test_logits=test_logits, test_labels=test_labels,
      backbone_params=setup.backbone_params,
      trainable_per_member=setup.trainable_per_member,
      trainable_total=setup.trainable_total, ood_logits=ood_logits,
      ood_dataset=config.ood.name or None, mode=config.ensemble_mode,
      test_agreement=test_agreement)
  results.update(singular_value_change(best_state.trainables))
  trainables_path = os.path.join(workdir, 'trainables.safetensors')
  best_trainables = sharding.to_host(best_state.trainables)  # collective: every process
  if jax.process_index() == 0:
    ckpt.save_trainables(
        trainables_path, best_trainables,
        metadata={'method': config.method, 'backbone': config.model.name,
                  'model_path': config.model.path, 'num_members': members,
                  'step': int(best_meta.get('step', 0))},
        frozen=setup.frozen)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('trainables written')
  backbone_bytes = sum(int(np.asarray(x).nbytes)
                       for x in jax.tree_util.tree_leaves(backbone.params))
  results['checkpoint'] = {
      'best_step': int(jax.device_get(best_state.step)),
      'best_val_accuracy': best_meta.get('best_val_accuracy'),
      'checkpoint_bytes': _dir_bytes(os.path.join(workdir, 'checkpoints', 'best')),
      'trainables_file_bytes': os.path.getsize(trainables_path),
      'backbone_bytes': backbone_bytes,
  }
  results['learning_rate'] = learning_rate
  results['config'] = json.loads(config.to_json_best_effort())
  if jax.process_index() == 0:
    report.write_results(workdir, results)
    report.reliability_diagram(os.path.join(workdir, 'reliability.png'), test_logits,
                               test_labels, mode=config.ensemble_mode)
    print(report.summary_table(results))
  checkpointer.close()
  return results
