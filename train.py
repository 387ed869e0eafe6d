r"""Trains and evaluates a Singular Value Ensemble (or a baseline) from an ml_collections config.

  python train.py --config=configs/default.py --workdir=workdir/default
  python train.py --config=configs/default.py --workdir=workdir/default --mode=eval
  python train.py --config=configs/default.py --workdir=w --config.num_members=8

Rerunning the same command on an interrupted workdir resumes from its latest checkpoint.
Stages: validate config → mesh → data → backbone → decompose → shard + jit → train loop
(validation each epoch, best + latest checkpoints) → evaluate the best checkpoint → report.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from typing import Any, NamedTuple

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
from jax.experimental import multihost_utils
from ml_collections import config_flags
import numpy as np
from tqdm import tqdm

from sve_jax import checkpoint as ckpt
from sve_jax import ensemble
from sve_jax import factored
from sve_jax import factorize
from sve_jax import input_pipeline
from sve_jax import methods
from sve_jax import metrics as metrics_lib
from sve_jax import models
from sve_jax import report
from sve_jax import sharding
from sve_jax import steps
from sve_jax import train_state
from sve_jax.data import builders
from sve_jax.data import datasets
from sve_jax.data import pipeline
import tensorflow_datasets as tfds

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and results go.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                          'train (then evaluate the best checkpoint) or eval only.')


class TrainingInterrupted(RuntimeError):
  """SIGTERM/SIGINT arrived; a checkpoint was written and the run can be resumed."""


# ---------------------------------------------------------------------------------------------
# Config validation: cheap, before any heavy work.
# ---------------------------------------------------------------------------------------------


def validate_config(config) -> None:
  """Raises ValueError naming the config key for values that cannot work."""
  if config.method not in methods.METHODS:
    raise ValueError(f'config.method={config.method!r} is not a known method; expected one '
                     f'of {methods.METHODS}')
  checks = [
      (config.num_members >= 1, f'config.num_members={config.num_members} must be >= 1'),
      (config.noise_std >= 0, f'config.noise_std={config.noise_std} must be >= 0'),
      (config.optim.learning_rate > 0,
       f'config.optim.learning_rate={config.optim.learning_rate} must be > 0'),
      (config.optim.full_finetune_learning_rate > 0
       or config.optim.full_finetune_learning_rate == -1,
       f'config.optim.full_finetune_learning_rate={config.optim.full_finetune_learning_rate} '
       f'must be > 0, or -1 for config.optim.learning_rate'),
      (0 <= config.optim.warmup_fraction < 1,
       f'config.optim.warmup_fraction={config.optim.warmup_fraction} must be in [0, 1)'),
      (config.num_epochs >= 1, f'config.num_epochs={config.num_epochs} must be >= 1'),
      (config.lora_rank >= 1, f'config.lora_rank={config.lora_rank} must be >= 1'),
      (config.batch_size >= 1, f'config.batch_size={config.batch_size} must be >= 1'),
      (config.eval_batch_size >= 1,
       f'config.eval_batch_size={config.eval_batch_size} must be >= 1'),
      (config.execution in factored.EXECUTIONS,
       f'config.execution={config.execution!r} must be one of {factored.EXECUTIONS}'),
      (config.ensemble_mode in ('probs', 'logits'),
       f"config.ensemble_mode={config.ensemble_mode!r} must be 'probs' or 'logits'"),
      (config.head_init_std >= 0 or config.head_init_std == -1,
       f'config.head_init_std={config.head_init_std} must be >= 0, or -1 for noise_std'),
      (isinstance(config.member_data_order, bool),
       f'config.member_data_order={config.member_data_order!r} must be True or False'),
      (config.optim.schedule in train_state.SCHEDULES,
       f'config.optim.schedule={config.optim.schedule!r} must be one of '
       f'{train_state.SCHEDULES}'),
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
  models.validate_model_config(config.model)
  check_dataset_name(config.data.name, 'config.data.name')
  datasets.check_options(config.data.name, config.data.options, 'config.data.options')
  if config.ood.name:
    check_dataset_name(config.ood.name, 'config.ood.name')
    datasets.check_options(config.ood.name, config.ood.options, 'config.ood.options')


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


@contextlib.contextmanager
def process_zero_first(name: str):
  """Runs the block on process 0, then on the other processes (a barrier named ``name``)."""
  if jax.process_count() > 1 and jax.process_index() != 0:
    multihost_utils.sync_global_devices(name)
  yield
  if jax.process_count() > 1 and jax.process_index() == 0:
    multihost_utils.sync_global_devices(name)


def run_identity(config, num_members: int) -> dict[str, Any]:
  """What a workdir's checkpoints must match to be resumed: backbone, method, members."""
  return {'method': config.method, 'backbone': config.model.name,
          'model_path': config.model.path, 'model_preset': config.model.preset,
          'num_members': num_members}


def check_dataset_name(name: str, key: str) -> None:
  """Raises unless ``name`` is a local builder or a registered tfds catalog data set."""
  if not datasets.is_known_dataset(name):
    raise ValueError(f'{key}={name!r} is neither a local data set '
                     f'{sorted(datasets.builders.LOCAL_BUILDERS)} nor a tfds catalog name')


# ---------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------------------------


class Predictions(NamedTuple):
  """Member logits ``(M, N, C)``, labels ``(N,)`` and, where the data set records it, the
  annotators' agreement ``(N,)`` (feature ``builders.AGREEMENT_FEATURE``; NaN = unknown)."""
  logits: np.ndarray
  labels: np.ndarray
  agreement: np.ndarray | None


def predict(eval_fn, state_trainables, frozen, source, transform, mesh,
            batch_size: int) -> Predictions:
  """:class:`Predictions` over every example of ``source``.

  Eval batch ``i`` gets the rng ``fold_in(key(0), i)``: stochastic forwards (MC dropout) are
  reproducible, with independent masks from batch to batch.
  """
  logits, labels, agreement = [], [], []
  for i, raw in enumerate(pipeline.eval_batches(source, global_batch_size=batch_size,
                                                process_index=jax.process_index(),
                                                process_count=jax.process_count())):
    batch = transform(raw)
    inputs = sharding.shard_batch(batch['inputs'], mesh)
    out = eval_fn(state_trainables, frozen, inputs, jax.random.fold_in(jax.random.key(0), i))
    out = sharding.to_host(out)
    # Each process read its own slice of the batch: gather them in process order.
    mask, label = (sharding.gather_process_slices(np.asarray(v))
                   for v in (raw['mask'], batch['label']))
    logits.append(out[:, mask])
    labels.append(label[mask])
    if builders.AGREEMENT_FEATURE in raw:
      agreement.append(sharding.gather_process_slices(
          np.asarray(raw[builders.AGREEMENT_FEATURE], np.float32))[mask])
  return Predictions(np.concatenate(logits, axis=1), np.concatenate(labels),
                     np.concatenate(agreement) if agreement else None)


def make_evaluate(setup, backbone, trainables, frozen, mesh, batch_size: int, source,
                  transform):
  """``evaluate(trainables, source, transform=transform) -> Predictions``.

  For the SVE family, every member's kernels are composed once per evaluation
  (:func:`sve_jax.ensemble.materialize_kernels`) when that costs less than the cheaper path
  per kernel (``auto``'s choice) on each of ``source``'s batches. The choice is made once, on
  ``source`` (the validation split), and serves every split evaluated; the logits are the
  same either way.
  """
  prepare = None
  eval_frozen, eval_trainables = frozen, trainables
  if _materialize_pays_off(setup, backbone, trainables, mesh, batch_size, source, transform):
    eval_frozen, eval_trainables = jax.eval_shape(ensemble.materialize_kernels, frozen,
                                                  trainables)
    prepare = jax.jit(ensemble.materialize_kernels, out_shardings=(
        sharding.replicated_shardings(mesh, eval_frozen),
        sharding.per_member_shardings(mesh, eval_trainables)))
    logging.info("evaluation composes every member's kernels once per pass")
  eval_fn = sharding.jit_eval_step(steps.make_eval_step(setup.forward), mesh, eval_trainables,
                                   eval_frozen)

  def evaluate(trainables, source, transform=transform):
    f, t = prepare(frozen, trainables) if prepare else (frozen, trainables)
    return predict(eval_fn, t, f, source, transform, mesh, batch_size)

  return evaluate


def _materialize_pays_off(setup, backbone, trainables, mesh, batch_size: int, source,
                          transform) -> bool:
  """:func:`ensemble.materialize_pays_off` over ``source``'s batches, with the positions each
  decomposed kernel meets in one batch on one device (abstract evaluation of its first batch).
  """
  if not factorize.layouts(setup.frozen):
    return False
  raw = next(iter(pipeline.eval_batches(source, global_batch_size=batch_size,
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count())))
  per_device = max(1, batch_size // mesh.shape[sharding.DATA])
  inputs = jax.tree_util.tree_map(lambda x: np.asarray(x)[:per_device],
                                  transform(raw)['inputs'])
  member_0 = jax.tree_util.tree_map(lambda t: jax.ShapeDtypeStruct(t.shape[1:], t.dtype),
                                    trainables)
  positions = factored.kernel_positions(backbone.apply, setup.frozen, member_0, inputs)
  return ensemble.materialize_pays_off(setup.frozen, positions, -(-len(source) // batch_size))


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------


def _write_jsonl(path: str, record: dict) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(report.to_jsonable(record)) + '\n')


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
  train_transform = input_pipeline.make_transform(
      backbone, dataset.input_key, dataset.label_key, augment=config.data.augment)
  eval_transform = input_pipeline.make_transform(backbone, dataset.input_key, dataset.label_key)

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
                             transform=input_pipeline.make_transform(
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


def train_batches(config, source, transform, start: pipeline.Position,
                  member_streams: int = 0):
  """The training batches from ``start``, as ``(batch, position after it)``.

  With ``member_streams = M > 0`` member ``m`` reads its own stream, seeded
  ``config.seed + m`` (its own order and augmentation), and the batches are stacked on a
  leading member axis: ``(M, B, ...)`` leaves. The streams have the same length, so one
  position (checked equal) resumes all of them exactly.
  """

  def stream(seed):
    return pipeline.train_batches(
        source, global_batch_size=config.batch_size, seed=seed, start=start,
        num_epochs=config.num_epochs, process_index=jax.process_index(),
        process_count=jax.process_count(), transform=transform)

  if not member_streams:
    return stream(config.seed)
  return stack_streams([stream(config.seed + m) for m in range(member_streams)])


def stack_streams(streams):
  """Zips ``(batch, position)`` streams into member-stacked batches and their position.

  Raises:
    RuntimeError: the streams disagree on the position (they must advance in lockstep).
  """
  for items in zip(*streams):
    positions = {position for _, position in items}
    if len(positions) != 1:
      raise RuntimeError(f'member batch streams out of step: positions {sorted(positions)}')
    yield jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[b for b, _ in items]), items[0][1]


def _train(config, workdir, checkpointer, state, abstract_state, frozen, train_step, validate,
           sources, transform, total_steps, steps_per_epoch, fingerprint, mesh, identity,
           member_streams: int = 0):
  """The loop: resume, step, validate each epoch, checkpoint, stop cleanly on signals.

  Validation (``validate(trainables) -> {accuracy, nll, ...}``, written to metrics.jsonl as
  ``val_*``) runs at each epoch end, at the last step and every ``config.eval_every_steps``
  steps (learning curves); each one saves a checkpoint, the best by validation accuracy.
  Checkpoints: at the end of each epoch, every ``config.checkpoint.every_steps`` steps, and
  once ``config.checkpoint.every_minutes`` have passed since the last save (bounds the work a
  SIGKILL loses). ``identity``: see :func:`run_identity`. ``member_streams``: see
  :func:`train_batches`.
  """
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  position = pipeline.Position()
  best_val = -1.
  restored = checkpointer.restore_latest(abstract_state)
  if restored is not None:
    state, meta = restored
    ckpt.check_fingerprint(meta, frozen, f'{workdir}/checkpoints/latest')
    position = pipeline.Position.from_dict(meta['position'])
    best_val = float(meta.get('best_val_accuracy', -1.))
    logging.info('resumed at step %d (epoch %d, batch %d)', int(state.step), position.epoch,
                 position.step)
  step = int(jax.device_get(state.step))
  if step >= total_steps:
    return state

  stop = {'signal': None}

  def request_stop(signum, _):
    stop['signal'] = signal.Signals(signum).name

  previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}

  def meta_for(pos, best):
    return {'position': pos.as_dict(), 'best_val_accuracy': best, 'step': int(state.step),
            'factors_fingerprint': fingerprint, 'identity': identity}

  batches = train_batches(config, sources['train'], transform, position, member_streams)
  bar = tqdm(total=total_steps, initial=step, desc='train', unit='step',
             disable=jax.process_index() != 0)
  t_last, n_last = time.time(), 0
  last_save = time.monotonic()
  try:
    for raw_batch, next_position in batches:
      batch = sharding.shard_batch(raw_batch, mesh, per_member=member_streams > 0)
      state, metrics = train_step(state, frozen, batch)
      step += 1
      loss = float(metrics['loss'])
      if not np.isfinite(loss):
        raise FloatingPointError(
            f'loss is {loss} at step {step} (epoch {position.epoch}); stopping. The last good '
            f'checkpoint under {workdir}/checkpoints/latest is intact: lower '
            'config.optim.learning_rate or check the data, then rerun to resume.')
      position = next_position
      n_last += config.batch_size
      if step % config.log_every_steps == 0 or step == total_steps:
        rate = n_last / max(time.time() - t_last, 1e-9)
        t_last, n_last = time.time(), 0
        record = {'step': step, 'epoch': position.epoch, 'loss': loss,
                  'grad_norm': float(metrics['grad_norm']), 'examples_per_sec': rate}
        if jax.process_index() == 0:
          _write_jsonl(metrics_path, record)
        bar.set_postfix(loss=f'{loss:.4f}', ex_per_s=f'{rate:.1f}')
      bar.update(1)
      end_of_epoch = position.step == 0
      periodic = config.checkpoint.every_steps and step % config.checkpoint.every_steps == 0
      last = step >= total_steps
      scheduled_eval = config.eval_every_steps and step % config.eval_every_steps == 0
      if end_of_epoch or last or scheduled_eval:
        val = validate(state.trainables)
        if jax.process_index() == 0:
          _write_jsonl(metrics_path, {'step': step, 'epoch': position.epoch,
                                      **{f'val_{k}': v for k, v in val.items()}})
        improved = val['accuracy'] > best_val
        best_val = max(best_val, val['accuracy'])
        checkpointer.save(state, meta_for(position, best_val), best=improved)
        last_save = time.monotonic()
        tqdm.write(f'step {step}: val accuracy {val["accuracy"]:.4f} nll {val["nll"]:.4f} '
                   f'ece {val["ece"]:.4f}' + (' (best)' if improved else ''))
      elif periodic or ckpt.wall_time_due(last_save, config.checkpoint.every_minutes):
        checkpointer.save(state, meta_for(position, best_val))
        last_save = time.monotonic()
      if last:
        break
      if stop['signal']:
        checkpointer.save(state, meta_for(position, best_val))
        raise TrainingInterrupted(
            f'{stop["signal"]} at step {step}: checkpoint written to {workdir}/checkpoints/'
            'latest; rerun the same command to resume')
  finally:
    bar.close()
    for s, handler in previous.items():
      signal.signal(s, handler)
    checkpointer.wait()  # asynchronous saves: on disk before resuming, evaluating or failing
  return state


def main(argv):
  del argv
  # Our own milestones at INFO; orbax's per-save chatter only from WARNING up.
  absl_logging.set_verbosity(absl_logging.INFO)
  for noisy in ('orbax', 'absl'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  if _WORKDIR.value is None:
    raise app.UsageError('--workdir is required')
  try:
    run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except TrainingInterrupted as e:
    print(e)
    raise SystemExit(130)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
