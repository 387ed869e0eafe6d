"""One run from a config, in stages: mesh → data → backbone → method → state → loop →
evaluate the best checkpoint → report.

:func:`run` reads top to bottom as those stages, in banner-commented blocks (big_vision's
``train.py`` style); each stage is one small function of this module.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, Callable, NamedTuple

import jax
from jax.experimental import multihost_utils
import numpy as np
import tensorflow_datasets as tfds

from sve_jax import ensemble
from sve_jax import export
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
from sve_jax.train.evaluate import make_zero_shot_evaluate
from sve_jax.train.loop import train_loop


def _sync(name: str) -> None:
  """A barrier named ``name`` across processes (nothing with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def process_zero_first(name: str):
  """Runs the block on process 0, then on the other processes (a barrier named ``name``)."""
  if jax.process_index() != 0:
    _sync(name)
  yield
  if jax.process_index() == 0:
    _sync(name)


# --------------------------------------------------------------------------------------------
# Mesh and workdir.
# --------------------------------------------------------------------------------------------


def make_mesh(config) -> tuple[jax.sharding.Mesh, int]:
  """Joins the processes, builds the ``(data, member)`` mesh and checks what must divide it.

  Returns:
    ``(mesh, num_members)``: the members the method evaluates (:meth:`methods.Method.num_members`).

  Raises:
    ValueError: a batch size, the members or the trained models do not split over the mesh.
  """
  sharding.maybe_initialize_distributed(config.distributed.coordinator_address or None,
                                        config.distributed.num_processes,
                                        config.distributed.process_id)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.member)
  sharding.check_batch_divisible(config.batch_size, mesh)
  sharding.check_batch_divisible(config.eval_batch_size, mesh)
  members = methods.get(config.method).num_members(config.num_members)
  sharding.check_members_divisible(members, mesh)
  trained = methods.get(config.method).trained_members(config.num_members)
  if trained % mesh.shape[sharding.MEMBER]:
    raise ValueError(f'config.method={config.method!r} trains {trained} model(s), which do not '
                     f'split over config.mesh.member={mesh.shape[sharding.MEMBER]}; set it to 1')
  return mesh, members


def open_workdir(config, workdir: str, mode: str,
                 num_members: int) -> tuple[ckpt.Checkpointer, dict[str, Any]]:
  """``(checkpointer, identity)`` of a writable workdir that belongs to this run.

  Raises:
    OSError: the workdir is not writable.
    ckpt.CheckpointError: its checkpoints belong to another run, or ``mode='eval'`` finds no
      best checkpoint.
  """
  check_workdir_writable(workdir)
  identity = run_identity(config, num_members)
  checkpointer = ckpt.Checkpointer(workdir, keep=config.checkpoint.keep,
                                   asynchronous=config.checkpoint.asynchronous)
  checkpointer.check_identity(identity)
  if mode == 'eval' and not checkpointer.best.all_steps():
    raise ckpt.CheckpointError(f'--mode=eval: no best checkpoint under {workdir}; train first')
  return checkpointer, identity


# --------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------


def data_dir_for(config, workdir: str) -> str:
  """``config.data.data_dir``, or ``tfds_data`` beside the workdir."""
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


# --------------------------------------------------------------------------------------------
# Method and train state.
# --------------------------------------------------------------------------------------------


def build_method(config, backbone: models.Backbone, rng: jax.Array) -> methods.Setup:
  """The method's decomposition and initial members (:func:`methods.build`), logged."""
  t0 = time.time()
  setup = methods.build(config.method, backbone, config, rng)
  logging.info('%s: built in %.1fs; backbone %d params, %d trainable per member',
               config.method, time.time() - t0, setup.backbone_params,
               setup.trainable_per_member)
  return setup


class Training(NamedTuple):
  """What the training loop runs: the placed state and factors, and the jitted step.

  Attributes:
    state: the train state on the mesh (members sharded over ``member``).
    abstract_state: its shapes, dtypes and shardings, to restore checkpoints into.
    frozen: the method's frozen tree, replicated on the mesh.
    train_step: ``(state, frozen, batches) -> (state, metrics)``, jitted with shardings:
      the steps of ``batches``' leading axis in one call
      (:func:`sve_jax.train.steps.make_multi_step`), metrics stacked along it.
    learning_rate: the method's peak learning rate.
    total_steps: optimiser steps of the whole run.
    steps_per_epoch: optimiser steps per pass over the training split.
  """
  state: Any
  abstract_state: Any
  frozen: Any
  train_step: Callable
  learning_rate: float
  total_steps: int
  steps_per_epoch: int


def make_training(config, setup: methods.Setup, mesh: jax.sharding.Mesh, num_train: int,
                  rng: jax.Array) -> Training:
  """The optimiser and its schedule, the train state placed on ``mesh``, the jitted step."""
  steps_per_epoch = pipeline.steps_per_epoch(num_train, config.batch_size)
  total_steps = steps_per_epoch * config.num_epochs
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)
  learning_rate = methods.get(config.method).learning_rate(config.optim)
  logging.info('%s: peak learning rate %g', config.method, learning_rate)
  optimizer = train_state.make_optimizer(
      learning_rate, total_steps=total_steps,
      schedule=train_state.schedule_for(config.optim.schedule, learning_rate, total_steps,
                                        config.optim.warmup_fraction),
      weight_decay=config.optim.weight_decay, clip_norm=config.optim.clip_norm)
  state = train_state.create_train_state(setup.trainables, optimizer, rng)
  frozen = sharding.place(setup.frozen, sharding.replicated_shardings(mesh, setup.frozen))
  state = sharding.place(state, sharding.state_shardings(mesh, state))
  abstract_state = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  # One call runs up to config.steps_per_execution steps (the loop stacks their batches).
  train_step = sharding.jit_train_step(
      steps.make_multi_step(steps.make_train_step(setup.forward, optimizer)), mesh, state,
      setup.frozen, setup.per_member_data, steps_axis=True)
  return Training(state, abstract_state, frozen, train_step, learning_rate, total_steps,
                  steps_per_epoch)


def singular_value_change(setup: methods.Setup, trainables) -> float | None:
  """SVE family: how far the members' s moved from the pretrained s
  (:func:`ensemble.singular_value_change`); other methods: ``None``. A collective: every
  process calls it."""
  if setup.pretrained_s is None:
    return None
  return ensemble.singular_value_change(setup.frozen, setup.pretrained_s,
                                        sharding.to_host(trainables))


def make_validate(config, setup: methods.Setup, evaluate, source):
  """``validate(trainables) -> metrics``: ensemble, members' mean and diversity on
  ``source`` (the validation split), and the movement of s."""

  def validate(trainables) -> dict[str, float]:
    val = evaluate(trainables, source=source)
    scores = metrics_lib.ensemble_and_members(val.logits, val.labels, mode=config.ensemble_mode)
    change = singular_value_change(setup, trainables)
    if change is not None:
      scores['singular_value_change'] = change
    return scores

  return validate


# --------------------------------------------------------------------------------------------
# The best checkpoint: evaluation, trainables file, report.
# --------------------------------------------------------------------------------------------


class BestEvaluation(NamedTuple):
  """The best checkpoint's state and metadata, and its predictions on each split."""
  state: Any
  meta: dict[str, Any]
  validation: Any
  test: Any
  ood_logits: np.ndarray | None


def evaluate_best(checkpointer: ckpt.Checkpointer, training: Training, fingerprint: float,
                  workdir: str, evaluate, sources, ood, backbone) -> BestEvaluation:
  """Restores the best checkpoint (its factors checked against ``fingerprint``) and
  evaluates it on every split."""
  state, meta = checkpointer.restore_best(training.abstract_state)
  ckpt.check_fingerprint(meta, fingerprint, f'{workdir}/checkpoints/best')
  validation = evaluate(state.trainables, source=sources['validation'])
  test = evaluate(state.trainables, source=sources['test'])
  ood_logits = None
  if ood is not None:
    ood_dataset, ood_source = ood
    ood_logits = evaluate(state.trainables, source=ood_source,
                          transform=transforms.make_transform(
                              backbone, ood_dataset.input_key, None)).logits
  return BestEvaluation(state, meta, validation, test, ood_logits)


def evaluate_zero_shot(config, backbone: models.Backbone, mesh, sources, ood,
                       eval_transform) -> dict[str, Any] | None:
  """The pretrained backbone's own scores before any training (:func:`report.zero_shot_results`),
  for a backbone without a fresh head (a decoder classifying by prompt); else ``None``."""
  if 'head' in backbone.params:
    return None
  evaluate = make_zero_shot_evaluate(backbone, mesh, config.eval_batch_size, eval_transform)
  validation = evaluate(sources['validation'])
  test = evaluate(sources['test'])
  ood_logits = None
  if ood is not None:
    ood_dataset, ood_source = ood
    ood_logits = evaluate(ood_source, transform=transforms.make_transform(
        backbone, ood_dataset.input_key, None)).logits
  logging.info('zero-shot: test accuracy %.4f', metrics_lib.evaluate(
      test.logits, test.labels)['accuracy'])
  return report.zero_shot_results(validation.logits, validation.labels, test.logits,
                                  test.labels, ood_logits)


def save_best_trainables(config, workdir: str, best: BestEvaluation, setup: methods.Setup,
                         num_members: int) -> str:
  """Writes the best members' trainables to ``workdir/trainables.safetensors``; its path."""
  path = os.path.join(workdir, 'trainables.safetensors')
  trainables = sharding.to_host(best.state.trainables)  # collective: every process
  if jax.process_index() == 0:
    export.save_trainables(
        path, trainables,
        metadata={'method': config.method, 'backbone': config.model.name,
                  'model_path': config.model.path, 'num_members': num_members,
                  'step': int(best.meta.get('step', 0))},
        frozen=setup.frozen)
  _sync('trainables written')
  return path


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def make_report(config, workdir: str, best: BestEvaluation, setup: methods.Setup,
                training: Training, backbone: models.Backbone,
                trainables_path: str, zero_shot: dict[str, Any] | None = None
                ) -> dict[str, Any]:
  """The results dict (:func:`report.build_results`); process 0 writes it and prints it."""
  results = report.build_results(
      method=config.method, val_logits=best.validation.logits,
      val_labels=best.validation.labels, test_logits=best.test.logits,
      test_labels=best.test.labels, backbone_params=setup.backbone_params,
      trainable_per_member=setup.trainable_per_member,
      trainable_total=setup.trainable_total, ood_logits=best.ood_logits,
      ood_dataset=config.ood.name or None, mode=config.ensemble_mode,
      test_agreement=best.test.agreement, zero_shot=zero_shot,
      singular_value_change=singular_value_change(setup, best.state.trainables),
      checkpoint=report.BestCheckpoint(
          best_step=int(jax.device_get(best.state.step)),
          best_val_accuracy=best.meta.get('best_val_accuracy'),
          checkpoint_bytes=_dir_bytes(os.path.join(workdir, 'checkpoints', 'best')),
          trainables_file_bytes=os.path.getsize(trainables_path),
          backbone_bytes=sum(int(np.asarray(x).nbytes)
                             for x in jax.tree_util.tree_leaves(backbone.params))),
      learning_rate=training.learning_rate,
      config=json.loads(config.to_json_best_effort()))
  if jax.process_index() == 0:
    report.write_results(workdir, results)
    report.reliability_diagram(os.path.join(workdir, 'reliability.png'), best.test.logits,
                               best.test.labels, mode=config.ensemble_mode)
    print(report.summary_table(results))
  return results


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def run(config, workdir: str, mode: str = 'train') -> dict[str, Any] | None:
  """Trains (``mode='train'``) and/or evaluates; returns the results dict."""
  # --- Config, mesh and workdir (cheap checks first) ------------------------------------
  validate_config(config)
  tfds.disable_progress_bar()
  mesh, members = make_mesh(config)
  checkpointer, identity = open_workdir(config, workdir, mode, members)

  # --- Data -----------------------------------------------------------------------------
  # Process 0 prepares the data first: processes sharing a data_dir must not race to write it.
  with process_zero_first('data prepared'):
    dataset, sources, ood = load_data(config, workdir)

  # --- Backbone and its input transforms ------------------------------------------------
  backbone = models.load_backbone(config.model, num_classes=dataset.num_classes)
  train_transform = transforms.make_transform(
      backbone, dataset.input_key, dataset.label_key, augment=config.data.augment)
  eval_transform = transforms.make_transform(backbone, dataset.input_key, dataset.label_key)

  # --- Method: decompose and initialise members -----------------------------------------
  init_rng, state_rng = jax.random.split(jax.random.key(config.seed))
  setup = build_method(config, backbone, init_rng)
  fingerprint = ckpt.factors_fingerprint(setup.frozen)  # once: it reads every frozen leaf

  # --- Train state, shardings, jitted steps ---------------------------------------------
  training = make_training(config, setup, mesh, len(sources['train']), state_rng)
  evaluate = make_evaluate(setup, backbone, training.state.trainables, training.frozen, mesh,
                           config.eval_batch_size, sources['validation'], eval_transform)

  # --- Train loop -----------------------------------------------------------------------
  if mode == 'train':
    train_loop(config, workdir, checkpointer, training.state, training.abstract_state,
               training.frozen, training.train_step,
               make_validate(config, setup, evaluate, sources['validation']), sources,
               train_transform, training.total_steps, training.steps_per_epoch,
               fingerprint, mesh, identity,
               member_streams=members if setup.per_member_data else 0)

  # --- Evaluate the best checkpoint, save its trainables, report -------------------------
  best = evaluate_best(checkpointer, training, fingerprint, workdir, evaluate, sources, ood,
                       backbone)
  trainables_path = save_best_trainables(config, workdir, best, setup, members)
  zero_shot = evaluate_zero_shot(config, backbone, mesh, sources, ood, eval_transform)
  results = make_report(config, workdir, best, setup, training, backbone, trainables_path,
                        zero_shot)
  checkpointer.close()
  return results
