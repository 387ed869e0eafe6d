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
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from sve_jax import export
from sve_jax import methods
from sve_jax import models
from sve_jax.data import corruptions
from sve_jax.data import datasets
from sve_jax.data import images
from sve_jax.data import pipeline
from sve_jax.data import transforms
from sve_jax.eval import feature_ood
from sve_jax.eval import metrics as metrics_lib
from sve_jax.eval import html_report
from sve_jax.eval import report
from sve_jax.eval import shift as shift_lib
from sve_jax.train import checkpoint as ckpt
from sve_jax.train import predict
from sve_jax.train import scalar_log
from sve_jax.train import shift_eval
from sve_jax.train import sharding
from sve_jax.train import state as train_state
from sve_jax.train import steps
from sve_jax.train import trunk_cache
from sve_jax.train.checks import check_workdir_writable, run_identity, validate_config
from sve_jax.train.evaluate import make_predictor
from sve_jax.train.evaluate import make_zero_shot_predictor
from sve_jax.train.evaluate import Split
from sve_jax.train.loop import TrainData
from sve_jax.train.loop import train_loop
from sve_jax.train.loop import Training


def _sync(name: str) -> None:
  """A barrier named ``name`` across processes (nothing with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def _process_zero_first(name: str):
  """Runs the block on process 0, then on the other processes (a barrier named ``name``)."""
  if jax.process_index() != 0:
    _sync(name)
  yield
  if jax.process_index() == 0:
    _sync(name)


# --------------------------------------------------------------------------------------------
# Mesh and workdir.
# --------------------------------------------------------------------------------------------


def join_processes_and_make_mesh(config: ml_collections.ConfigDict
                                 ) -> tuple[jax.sharding.Mesh, int]:
  """Joins the processes, builds the ``(data, member)`` mesh (:func:`sharding.make_mesh`) and
  checks what must divide it.

  Returns:
    ``(mesh, num_members)``: the members the method reports
    (:meth:`methods.Method.reported_members`).

  Raises:
    ValueError: a batch size, the members or the trained models do not split over the mesh.
  """
  sharding.maybe_initialize_distributed(config.distributed.coordinator_address or None,
                                        config.distributed.num_processes,
                                        config.distributed.process_id)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.member)
  sharding.check_batch_divisible(config.batch_size, mesh)
  sharding.check_batch_divisible(config.eval_batch_size, mesh)
  members = methods.get(config.method).reported_members(config.num_members)
  sharding.check_members_divisible(members, mesh)
  trained = methods.get(config.method).trained_copies(config.num_members)
  if trained % mesh.shape[sharding.MEMBER]:
    raise ValueError(f'config.method={config.method!r} trains {trained} model(s), which do not '
                     f'split over config.mesh.member={mesh.shape[sharding.MEMBER]}; set it to 1')
  return mesh, members


def open_workdir(config: ml_collections.ConfigDict, workdir: str, mode: str,
                 num_members: int) -> ckpt.Workdir:
  """The writable workdir of this run, its checkpointer and this run's identity.

  Raises:
    OSError: the workdir is not writable.
    ckpt.CheckpointError: its checkpoints belong to another run, ``mode='eval'`` finds no
      best checkpoint, or ``mode='predict'`` no finished run.
  """
  check_workdir_writable(workdir)
  identity = run_identity(config, num_members)
  checkpointer = ckpt.Checkpointer(workdir, keep=config.checkpoint.keep,
                                   asynchronous=config.checkpoint.asynchronous)
  try:
    checkpointer.check_identity(identity)
    _check_finished_run(checkpointer, workdir, mode)
  except Exception:
    checkpointer.close()  # its background threads must not outlive the error
    raise
  return ckpt.Workdir(workdir, checkpointer, identity)


def _check_finished_run(checkpointer: ckpt.Checkpointer, workdir: str, mode: str) -> None:
  """``eval`` needs a best checkpoint; ``predict`` a finished run: its results.json, and its
  best checkpoint or its trainables file (:data:`export.TRAINABLES_FILENAME`)."""
  has_best = bool(checkpointer.best.all_steps())
  if mode == 'eval' and not has_best:
    raise ckpt.CheckpointError(f'--mode=eval: no best checkpoint under {workdir}; train first')
  has_trainables = has_best or os.path.exists(os.path.join(workdir, export.TRAINABLES_FILENAME))
  if mode == 'predict' and not (has_trainables and os.path.exists(
      os.path.join(workdir, report.RESULTS_FILENAME))):
    raise ckpt.CheckpointError(
        f'--mode=predict: {workdir} holds no finished run (it needs '
        f'{report.RESULTS_FILENAME}, and a best checkpoint or {export.TRAINABLES_FILENAME}); '
        'train first')


# --------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------


def _data_dir_for(config, workdir: str) -> str:
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


class OodSet(NamedTuple):
  """An out-of-distribution data set to score: its name, :class:`datasets.Dataset` and the
  (capped) source of its ``config.ood.split``."""
  name: str
  dataset: datasets.Dataset
  source: Any


def ood_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The OOD sets a run scores: ``config.ood.name`` first, then ``config.ood.extra_names``
  (none without ``config.ood.name``)."""
  if not config.ood.name:
    return ()
  return (config.ood.name,) + tuple(config.ood.get('extra_names', ()))


def _load_ood_sets(config: ml_collections.ConfigDict, data_dir: str) -> list[OodSet]:
  """The :class:`OodSet` of each of :func:`ood_names`, capped at
  ``config.data.max_eval_examples``. The first takes ``config.ood``'s options; the extra
  sets their builders' defaults."""
  sets = []
  for i, name in enumerate(ood_names(config)):
    options = _data_options(config.ood, config.seed) if i == 0 else {'name': name}
    options['splits'] = {config.ood.split: config.ood.split}
    dataset = datasets.get_dataset(options, data_dir)
    sets.append(OodSet(name, dataset, _cap(dataset.splits[config.ood.split],
                                           config.data.max_eval_examples, config.seed)))
  return sets


def load_data(config: ml_collections.ConfigDict, workdir: str
              ) -> tuple[Any, dict, list[OodSet]]:
  """``(dataset, {role: source}, OOD sets)`` with caps applied; the OOD sets
  (:func:`ood_names`, the primary first) are ``[]`` without ``config.ood.name``."""
  data_dir = _data_dir_for(config, workdir)
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
  return dataset, sources, _load_ood_sets(config, data_dir)


def ood_splits(backbone: models.Backbone, ood: list[OodSet]) -> dict[str, Split]:
  """Each OOD set as a :class:`Split` to evaluate (no labels), by name."""
  return {o.name: Split(o.source, transforms.make_transform(backbone, o.dataset.input_key,
                                                            None)) for o in ood}


def validation_ood_split(config: ml_collections.ConfigDict,
                         ood: dict[str, Split]) -> Split | None:
  """With ``config.ood.every_validation``, the fixed subset of the primary OOD set scored at
  every validation: at most ``config.ood.max_examples_per_validation`` examples (-1: all),
  drawn with ``config.seed``; else ``None``."""
  if not (config.ood.get('every_validation') and ood):
    return None
  primary = next(iter(ood.values()))
  return Split(_cap(primary.source, config.ood.max_examples_per_validation, config.seed),
               primary.transform)


def feature_train_split(config: ml_collections.ConfigDict, train_source: Any,
                        transform: Callable) -> Split | None:
  """With ``config.ood.feature_scores`` (and an OOD set), the training subset the class
  Gaussians of the feature scores are fitted on: at most
  ``config.ood.max_feature_train_examples`` (-1: all), drawn with ``config.seed``, labelled
  by ``transform``; else ``None``."""
  if not (config.ood.get('feature_scores') and config.ood.name):
    return None
  return Split(_cap(train_source, config.ood.max_feature_train_examples, config.seed),
               transform)


def plan_shift(config: ml_collections.ConfigDict, modality: str, input_key: str,
              test_source: Any) -> shift_eval.ShiftPlan | None:
  """With ``config.shift.enabled``, what the final evaluation scores under corruption: at
  most ``config.shift.max_examples`` (-1: all) of ``test_source``, drawn with ``config.seed``,
  under ``config.shift.corruptions`` (none named: :data:`corruptions.DEFAULTS` of
  ``modality``) at ``config.shift.severities``; else ``None``.

  Raises:
    ValueError: a named corruption is not one of ``modality``'s.
  """
  shift = config.get('shift')
  if not (shift and shift.enabled):
    return None
  names = tuple(shift.corruptions) or corruptions.DEFAULTS[modality]
  corruptions.check_names(names, 'config.shift.corruptions', modality)
  return shift_eval.ShiftPlan(_cap(test_source, shift.max_examples, config.seed), input_key,
                              names, tuple(shift.severities), config.seed)


# --------------------------------------------------------------------------------------------
# Backbone and its input transforms.
# --------------------------------------------------------------------------------------------


class BackboneInputs(NamedTuple):
  """The loaded backbone and the inputs it reads.

  Attributes:
    backbone: the pretrained :class:`models.Backbone`, with a head of the data set's classes.
    train_transform: the training transform (with ``config.data.augment``).
    eval_transform: the evaluation transform.
    splits: the ``'validation'`` and ``'test'`` :class:`Split`, through ``eval_transform``.
    ood: each OOD set as a :class:`Split` by name (:func:`ood_splits`), the primary first.
    shift_plan: what the final evaluation scores under corruption (:func:`plan_shift`).
  """
  backbone: models.Backbone
  train_transform: Callable
  eval_transform: Callable
  splits: dict[str, Split]
  ood: dict[str, Split]
  shift_plan: shift_eval.ShiftPlan | None


def load_backbone_and_splits(config: ml_collections.ConfigDict, dataset: datasets.Dataset,
                             sources: dict[str, Any], ood_sets: list[OodSet]
                             ) -> BackboneInputs:
  """Loads ``config.model`` with ``dataset``'s classes and builds its transforms, the
  evaluation splits of ``sources`` and ``ood_sets``, and the shift plan.

  Raises:
    ValueError: a named corruption is not one of the backbone's modality's
      (:func:`plan_shift`).
  """
  backbone = models.load_backbone(config.model, num_classes=dataset.num_classes)
  train_transform = transforms.make_transform(
      backbone, dataset.input_key, dataset.label_key, augment=config.data.augment)
  eval_transform = transforms.make_transform(backbone, dataset.input_key, dataset.label_key)
  splits = {role: Split(sources[role], eval_transform) for role in ('validation', 'test')}
  ood = ood_splits(backbone, ood_sets)
  shift_plan = plan_shift(config, backbone.modality, dataset.input_key, sources['test'])
  return BackboneInputs(backbone, train_transform, eval_transform, splits, ood, shift_plan)


# --------------------------------------------------------------------------------------------
# Method and train state.
# --------------------------------------------------------------------------------------------


def build_method(config: ml_collections.ConfigDict, backbone: models.Backbone,
                 rng: jax.Array) -> methods.MethodSetup:
  """The method's decomposition and initial members (:func:`methods.build` with the
  config's :class:`methods.MethodOptions`), logged."""
  t0 = time.time()
  setup = methods.build(config.method, backbone, methods.MethodOptions.from_config(config), rng)
  logging.info('%s: built in %.1fs; backbone %d params, %d trainable per member',
               config.method, time.time() - t0, setup.backbone_params,
               setup.trainable_per_member)
  return setup


def make_train_data(config: ml_collections.ConfigDict, backbone: models.Backbone,
                    setup: methods.MethodSetup, source: Any,
                    transforms_: tuple[Callable, Callable], members: int) -> TrainData:
  """The training source and transform: the raw split, or with ``config.trunk_cache`` the
  trunk's outputs on it, computed once (:mod:`sve_jax.train.trunk_cache`; ``transforms_``
  is ``(train, eval)``; the cache reads the split through the evaluation transform)."""
  member_streams = members if setup.per_member_data else 0
  if not config.trunk_cache:
    return TrainData(source, transforms_[0], member_streams=member_streams)
  trunk_cache.check(config, backbone, setup.dropout_in_training)
  t0 = time.time()
  cached = trunk_cache.build(backbone, source, transforms_[1], config.eval_batch_size,
                             int(config.trunk_cache_max_gb * 2**30))
  logging.info('trunk cache: %d examples, %.1f MiB, built in %.1fs', len(cached),
               cached.nbytes / 2**20, time.time() - t0)
  return TrainData(cached, trunk_cache.to_train_batch, member_streams=member_streams)


def make_training(config: ml_collections.ConfigDict, setup: methods.MethodSetup,
                  mesh: jax.sharding.Mesh, num_train: int, rng: jax.Array) -> Training:
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
  fingerprint = export.factors_fingerprint(setup.frozen)  # once: it reads every frozen leaf
  state = train_state.create_train_state(setup.trainables, optimizer, rng)
  frozen = sharding.place(setup.frozen,
                          sharding.frozen_shardings(mesh, setup.frozen, config.mesh.frozen))
  state = sharding.place(state, sharding.state_shardings(mesh, state))
  abstract_state = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  # One call runs up to config.steps_per_execution steps (the loop stacks their batches).
  train_step = sharding.jit_train_step(
      steps.make_multi_step(steps.make_train_step(setup.forward, optimizer)), mesh, state,
      setup.frozen, setup.per_member_data, steps_axis=True, frozen_layout=config.mesh.frozen)
  return Training(state, abstract_state, frozen, fingerprint, train_step, learning_rate,
                  total_steps, steps_per_epoch)


def singular_value_change(setup: methods.MethodSetup, trainables: Any) -> float | None:
  """SVE family: how far the members' s moved from the pretrained s
  (:func:`metrics_lib.singular_value_change`); other methods: ``None``. A collective: every
  process calls it."""
  if setup.pretrained_s is None:
    return None
  return metrics_lib.singular_value_change(setup.frozen, setup.pretrained_s,
                                        sharding.to_host(trainables))


#: The OOD scores of a validation (:func:`make_validate`), logged as ``ood_<key>``.
VALIDATION_OOD_KEYS = ('auroc_msp', 'auroc_entropy', 'auroc_mi')


def make_validate(config: ml_collections.ConfigDict, setup: methods.MethodSetup,
                  predictor: Callable, split: Split,
                  ood: Split | None = None) -> Callable[[Any], dict[str, float]]:
  """``validate(trainables) -> metrics``: ensemble, members' mean and diversity on
  ``split`` (the validation split), and the movement of s.

  With ``ood`` (a fixed OOD subset), also ``ood_auroc_{msp,entropy,mi}``
  (:data:`VALIDATION_OOD_KEYS`): :func:`metrics_lib.ood_metrics` of ``split`` as
  in-distribution against ``ood``, at T = 1.
  """

  def validate(trainables) -> dict[str, float]:
    val = predictor(trainables, split)
    scores = metrics_lib.ensemble_and_members(val.logits, val.labels, mode=config.ensemble_mode)
    if ood is not None:
      aurocs = metrics_lib.ood_metrics(val.logits, predictor(trainables, ood).logits,
                                       mode=config.ensemble_mode)
      scores.update({f'ood_{key}': aurocs[key] for key in VALIDATION_OOD_KEYS})
    change = singular_value_change(setup, trainables)
    if change is not None:
      scores['singular_value_change'] = change
    return scores

  return validate


class MethodParts(NamedTuple):
  """The method built on the backbone: what training, evaluation and prediction run.

  Attributes:
    setup: the method's decomposition and initial members (:func:`build_method`).
    training: the train state on the mesh and the jitted step (:func:`make_training`).
    predictor: ``predictor(trainables, split, features=False)``
      (:func:`sve_jax.train.evaluate.make_predictor`).
    fit_posterior: :func:`make_fit_posterior`'s fit, or ``None``.
  """
  setup: methods.MethodSetup
  training: Training
  predictor: Callable
  fit_posterior: Callable[[Any], methods.Posterior] | None


def build_method_parts(config: ml_collections.ConfigDict, inputs: BackboneInputs,
                       mesh: jax.sharding.Mesh, train_source: Any) -> MethodParts:
  """The method on ``inputs.backbone``: its members initialised with the first half of
  ``key(config.seed)``, the train state (the second half) placed on ``mesh``, the predictor
  and, for a method that fits a posterior, its fit on ``train_source``."""
  init_rng, state_rng = jax.random.split(jax.random.key(config.seed))
  setup = build_method(config, inputs.backbone, init_rng)
  training = make_training(config, setup, mesh, len(train_source), state_rng)
  predictor = make_predictor(setup, inputs.backbone, training, mesh, config.eval_batch_size,
                             inputs.splits['validation'], config.mesh.frozen)
  fit_posterior = make_fit_posterior(config, setup, training, mesh, predictor, inputs.splits,
                                     train_source)
  return MethodParts(setup, training, predictor, fit_posterior)


def train_members(config: ml_collections.ConfigDict, workdir: ckpt.Workdir,
                  parts: MethodParts, inputs: BackboneInputs, train_source: Any,
                  num_members: int, mesh: jax.sharding.Mesh) -> None:
  """Runs :func:`train_loop` on ``train_source`` (:func:`make_train_data`), validating on
  the validation split (and, with ``config.ood.every_validation``, an OOD subset)."""
  train_data = make_train_data(config, inputs.backbone, parts.setup, train_source,
                               (inputs.train_transform, inputs.eval_transform), num_members)
  validate = make_validate(config, parts.setup, parts.predictor, inputs.splits['validation'],
                           validation_ood_split(config, inputs.ood))
  train_loop(config, parts.training, workdir, train_data, validate, mesh)


# --------------------------------------------------------------------------------------------
# A posterior fitted after training.
# --------------------------------------------------------------------------------------------


#: Folded into ``key(config.seed)`` for the posterior's draws.
POSTERIOR_KEY = 1


def make_fit_posterior(config: ml_collections.ConfigDict, setup: methods.MethodSetup,
                       training: Training, mesh: jax.sharding.Mesh, predictor: Callable,
                       splits: dict[str, Split], train_source: Any
                       ) -> Callable[[Any], methods.Posterior] | None:
  """``fit(trainables) -> methods.Posterior`` for a method that fits a posterior after
  training (:attr:`methods.MethodSetup.fit_posterior`); ``None`` for the others.

  The fit sees at most ``config.posterior_fit_examples`` training examples (-1: all; a subset
  drawn with ``config.seed``) through the evaluation transform, in batches of
  ``config.batch_size``; it is tuned on the ensemble NLL (``config.ensemble_mode``) of
  ``splits['validation']``, and draws with ``fold_in(key(config.seed), POSTERIOR_KEY)``. Its
  members come back placed on the mesh like trainables.
  """
  if setup.fit_posterior is None:
    return None
  validation = splits['validation']
  subset = _cap(train_source, config.posterior_fit_examples, config.seed)

  def batches():
    for raw in pipeline.eval_batches(subset, global_batch_size=config.batch_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()):
      inputs = validation.transform(raw)['inputs']  # the evaluation transform
      yield sharding.shard_batch({'inputs': inputs, 'mask': raw['mask']}, mesh)

  def place(trainables):
    return sharding.place(trainables, sharding.per_member_shardings(mesh, trainables))

  def validation_nll(trainables) -> float:
    val = predictor(place(trainables), validation)
    return metrics_lib.evaluate(val.logits, val.labels, mode=config.ensemble_mode)['nll']

  def fit(trainables) -> methods.Posterior:
    t0 = time.time()
    key = jax.random.fold_in(jax.random.key(config.seed), POSTERIOR_KEY)
    posterior = setup.fit_posterior(training.frozen, trainables, methods.PosteriorData(
        batches(), len(train_source), validation_nll, key))
    logging.info('%s: posterior fitted in %.1fs: %s', config.method, time.time() - t0,
                 posterior.info)
    return posterior._replace(trainables=place(posterior.trainables))

  return fit


# --------------------------------------------------------------------------------------------
# The best checkpoint: evaluation, trainables file, report.
# --------------------------------------------------------------------------------------------


class BestEvaluation(NamedTuple):
  """The best checkpoint's state and metadata, and its predictions on each split.

  Attributes:
    state: the best checkpoint's train state.
    meta: its metadata.
    validation: predictions on the validation split.
    test: predictions on the test split (with features when ``train`` is set).
    ood: predictions on each OOD set by name, the primary first (``{}`` without OOD).
    train: feature scores only: predictions, with features, on the training subset the class
      Gaussians are fitted on; else ``None``.
    posterior: for a method with a posterior fitted after training, what the fit recorded
      (:attr:`methods.Posterior.info`); the predictions are then its members'. Else ``None``.
    members: the trainables the predictions are of: the posterior's members, else
      ``state.trainables``. Any later evaluation of this checkpoint scores these.
  """
  state: Any
  meta: dict[str, Any]
  validation: report.Predictions
  test: report.Predictions
  ood: dict[str, report.Predictions]
  train: report.Predictions | None = None
  posterior: dict[str, Any] | None = None
  members: Any = None

  @property
  def ood_logits(self) -> np.ndarray | None:
    """The primary OOD set's member logits, or ``None``."""
    return next(iter(self.ood.values())).logits if self.ood else None


def restore_best(workdir: ckpt.Workdir, training: Training) -> tuple[Any, dict[str, Any]]:
  """The best checkpoint's state and metadata, its factors checked against
  ``training.fingerprint``."""
  state, meta = workdir.checkpointer.restore_best(training.abstract_state)
  export.check_fingerprint(meta, training.fingerprint, f'{workdir.path}/checkpoints/best')
  return state, meta


def evaluate_best(workdir: ckpt.Workdir, training: Training, predictor: Callable,
                  splits: dict[str, Split], ood: dict[str, Split],
                  feature_train: Split | None = None,
                  fit_posterior: Callable[[Any], methods.Posterior] | None = None
                  ) -> BestEvaluation:
  """Restores the best checkpoint (:func:`restore_best`) and evaluates it on the validation
  and test ``splits`` and on each OOD set of ``ood`` (by name). With ``fit_posterior``
  (:func:`make_fit_posterior`), the members evaluated are those of the posterior it fits at
  the best checkpoint.

  With ``feature_train`` (a training subset, labelled), the test and OOD passes also return
  each member's pooled features, and ``feature_train`` is evaluated with features too: what
  :func:`feature_ood_metrics` needs.
  """
  state, meta = restore_best(workdir, training)
  posterior = fit_posterior(state.trainables) if fit_posterior else None
  members = posterior.trainables if posterior else state.trainables
  features = feature_train is not None
  validation = predictor(members, splits['validation'])
  test = predictor(members, splits['test'], features)
  ood_predictions = {name: predictor(members, split, features) for name, split in ood.items()}
  train = predictor(members, feature_train, True) if features else None
  return BestEvaluation(state, meta, validation, test, ood_predictions, train,
                        posterior.info if posterior else None, members)


def feature_ood_metrics(best: BestEvaluation) -> dict[str, dict[str, float]]:
  """Per OOD set, the AUROCs of the feature-space scores of the test split against it
  (:func:`feature_ood.feature_ood_metrics`), each member's class Gaussians fitted on its
  features of ``best.train``; ``{}`` without those features."""
  if best.train is None:
    return {}
  gaussians = feature_ood.fit_member_gaussians(best.train.features, best.train.labels,
                                               int(np.shape(best.test.logits)[-1]))
  return {name: feature_ood.feature_ood_metrics(gaussians, best.test.features, p.features)
          for name, p in best.ood.items()}


def evaluate_zero_shot(config: ml_collections.ConfigDict, backbone: models.Backbone,
                       mesh: jax.sharding.Mesh, splits: dict[str, Split],
                       ood: Split | None) -> dict[str, Any] | None:
  """The pretrained backbone's own scores before any training
  (:func:`report.zero_shot_results`) on the validation and test ``splits`` and on the OOD
  split ``ood``, for a backbone without a fresh head (a decoder classifying by prompt);
  else ``None``."""
  if 'head' in backbone.params:
    return None
  predictor = make_zero_shot_predictor(backbone, mesh, config.eval_batch_size,
                                       config.mesh.frozen)
  validation, test = predictor(splits['validation']), predictor(splits['test'])
  ood_logits = None if ood is None else predictor(ood).logits
  results = report.zero_shot_results(validation, test, ood_logits)
  logging.info('zero-shot: test accuracy %.4f, NLL %.4f', results['test']['accuracy'],
               results['test']['nll'])
  return results


def save_best_trainables(config: ml_collections.ConfigDict, workdir: str, best: BestEvaluation,
                         setup: methods.MethodSetup, num_members: int) -> str:
  """Writes the best members' trainables to ``workdir/trainables.safetensors``; its path."""
  path = os.path.join(workdir, export.TRAINABLES_FILENAME)
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


def best_checkpoint_facts(workdir: str, best: BestEvaluation, trainables_path: str,
                          backbone: models.Backbone) -> report.BestCheckpoint:
  """The results' ``checkpoint`` section: the evaluated step and what storing it costs."""
  return report.BestCheckpoint(
      best_step=int(jax.device_get(best.state.step)),
      best_val_accuracy=best.meta.get('best_val_accuracy'),
      checkpoint_bytes=_dir_bytes(os.path.join(workdir, 'checkpoints', 'best')),
      trainables_file_bytes=os.path.getsize(trainables_path),
      backbone_bytes=sum(int(np.asarray(x).nbytes)
                         for x in jax.tree_util.tree_leaves(backbone.params)))


def make_report(config: ml_collections.ConfigDict, workdir: str, best: BestEvaluation,
                setup: methods.MethodSetup, training: Training,
                checkpoint: report.BestCheckpoint,
                zero_shot: dict[str, Any] | None = None,
                shift: dict[str, Any] | None = None) -> dict[str, Any]:
  """The results dict (:func:`report.build_results`); process 0 writes it, its plots
  (``reliability.png``, and ``shift.png`` with a ``shift`` section) and prints it."""
  features = feature_ood_metrics(best)
  ood = [report.OodLogits(name, p.logits, features.get(name)) for name, p in best.ood.items()]
  results = report.build_results(
      config.method, best.validation, best.test,
      report.ParamCounts(setup.backbone_params, setup.trainable_per_member,
                         setup.trainable_total),
      ood=ood or None, mode=config.ensemble_mode,
      run=report.RunSections(
          zero_shot=zero_shot, shift=shift,
          singular_value_change=singular_value_change(setup, best.state.trainables),
          posterior=best.posterior, checkpoint=checkpoint, learning_rate=training.learning_rate,
          config=json.loads(config.to_json_best_effort())))
  if jax.process_index() == 0:
    report.write_results(workdir, results)
    report.reliability_diagram(os.path.join(workdir, 'reliability.png'), best.test.logits,
                               best.test.labels, mode=config.ensemble_mode)
    if shift is not None:
      shift_lib.plot_shift(os.path.join(workdir, shift_lib.PLOT_FILENAME),
                           shift_lib.shift_curves(shift),
                           f'{config.method}, M = {results["num_members"]}: '
                           f'{config.data.name} under corruption')
    print(report.summary_table(results))
  return results


def write_html_report(workdir: str, results: dict[str, Any], best: BestEvaluation,
                      dataset: datasets.Dataset, test_source: Any) -> str:
  """``workdir/report.html`` (:mod:`sve_jax.eval.html_report`) of the evaluated run."""
  def describe(index: int) -> str:
    if dataset.input_key == 'image':
      return f'test image #{index}'
    return transforms.decode_texts([test_source[index][dataset.input_key]])[0]

  return html_report.write_html_report(workdir, html_report.ReportInputs(
      results=results, test_logits=best.test.logits, test_labels=best.test.labels,
      class_names=dataset.label_names, describe=describe,
      metrics_path=os.path.join(workdir, scalar_log.METRICS_FILENAME),
      reliability_png=os.path.join(workdir, 'reliability.png'), ood_logits=best.ood_logits))


def evaluate_and_report(config: ml_collections.ConfigDict, workdir: ckpt.Workdir,
                        parts: MethodParts, inputs: BackboneInputs, dataset: datasets.Dataset,
                        sources: dict[str, Any], mesh: jax.sharding.Mesh, num_members: int
                        ) -> dict[str, Any]:
  """Evaluates the best checkpoint (:func:`evaluate_best`), saves its trainables, scores the
  pretrained backbone (:func:`evaluate_zero_shot`) and the members under shift, and reports
  (:func:`make_report`; process 0 also writes report.html). Returns the results dict."""
  path = workdir.path
  best = evaluate_best(workdir, parts.training, parts.predictor, inputs.splits, inputs.ood,
                       feature_train_split(config, sources['train'], inputs.eval_transform),
                       parts.fit_posterior)
  trainables_path = save_best_trainables(config, path, best, parts.setup, num_members)
  zero_shot = evaluate_zero_shot(config, inputs.backbone, mesh, inputs.splits,
                                 next(iter(inputs.ood.values()), None))
  shift_section = None if inputs.shift_plan is None else shift_eval.evaluate_shift(
      inputs.shift_plan, parts.predictor, best.members, inputs.eval_transform,
      config.ensemble_mode)
  results = make_report(config, path, best, parts.setup, parts.training,
                        best_checkpoint_facts(path, best, trainables_path, inputs.backbone),
                        zero_shot, shift_section)
  if jax.process_index() == 0:
    write_html_report(path, results, best, dataset, sources['test'])
  return results


def _input_columns(config: ml_collections.ConfigDict, dataset: datasets.Dataset,
                   request: predict.PredictRequest) -> predict.InputColumns:
  """The input rows' columns: the config's text/label columns (or the data set's)."""
  if os.path.isdir(request.input):
    return predict.InputColumns(predict.IMAGE_PATH_COLUMN)
  options = config.data.options
  return predict.InputColumns(options.get('text_column') or dataset.input_key,
                              options.get('label_column') or dataset.label_key,
                              options.get('encoding') or 'utf-8')


class RestoredTrainables(NamedTuple):
  """The members ``--mode=predict`` scores with, and where they came from.

  Attributes:
    trainables: the per-member tree, placed as the train state's trainables.
    source: results.json's record of it: ``source`` (``'best_checkpoint'`` or
      ``'trainables_file'``), ``path`` and ``step``.
  """
  trainables: Any
  source: dict[str, Any]


def restore_trainables(workdir: ckpt.Workdir, training: Training,
                       setup: methods.MethodSetup) -> RestoredTrainables:
  """The best checkpoint's trainables (:func:`restore_best`), or, when the workdir has no
  best checkpoint, those of its trainables file (:func:`export.load_trainables`: the
  fingerprint of ``setup.frozen``, and leaf for leaf the train state's trainables).

  Raises:
    ckpt.CheckpointError: an unreadable best checkpoint, or a trainables file that is
      unreadable or of another run (naming the file).
  """
  if workdir.checkpointer.best.all_steps():
    state, _ = restore_best(workdir, training)
    return RestoredTrainables(state.trainables, {
        'source': 'best_checkpoint',
        'path': os.path.join(os.path.abspath(workdir.path), 'checkpoints', 'best'),
        'step': int(jax.device_get(state.step))})
  path = os.path.join(os.path.abspath(workdir.path), export.TRAINABLES_FILENAME)
  abstract = training.abstract_state.trainables
  host, meta = export.load_trainables(path, setup.frozen, like=abstract)
  host = jax.tree_util.tree_map(lambda x, a: np.asarray(x, a.dtype), host, abstract)
  trainables = sharding.place(host, jax.tree_util.tree_map(lambda a: a.sharding, abstract))
  return RestoredTrainables(trainables, {'source': 'trainables_file', 'path': path,
                                         'step': meta.get('step')})


def predict_new_data(config: ml_collections.ConfigDict, workdir: ckpt.Workdir,
                     restored: RestoredTrainables, predictor: Callable,
                     splits: dict[str, Split], dataset: datasets.Dataset,
                     backbone: models.Backbone, checked: predict.CheckedInput
                     ) -> dict[str, Any]:
  """``--mode=predict``: scores the checked input with ``restored`` (:func:`restore_trainables`),
  the review threshold chosen on the validation split; adds the ``predict`` section to
  results.json, with ``restored.source`` as its ``trainables``."""
  request, columns = checked.request, checked.columns
  trainables = restored.trainables
  validation = predictor(trainables, splits['validation'])
  threshold = predict.choose_threshold(validation.logits, validation.labels,
                                       mode=config.ensemble_mode, **request.targets())
  transform = transforms.make_transform(backbone, dataset.input_key, None)

  def score(rows: list[dict]) -> np.ndarray:
    if columns.input == predict.IMAGE_PATH_COLUMN:
      source = [{dataset.input_key: images.load_image(
          os.path.join(request.input, r[columns.input]), backbone.image_size)} for r in rows]
    else:
      source = [{dataset.input_key: str(r[columns.input])} for r in rows]
    return predictor(trainables, Split(source, transform)).logits

  section = predict.predict_to_file(checked, score, threshold, dataset.label_names,
                                    config.ensemble_mode)
  section['trainables'] = restored.source
  if jax.process_index() == 0:
    with open(os.path.join(workdir.path, report.RESULTS_FILENAME)) as f:
      results = json.load(f)
    results['predict'] = section
    report.write_results(workdir.path, results)
    print(f"predict: {section['rows']} rows -> {section['output']}; "
          f"{section['flagged_for_review']} flagged for review (confidence < "
          f"{threshold.confidence:.4f}, {threshold.target} {threshold.target_value:g} on "
          'validation)' + (f"; accuracy {section['accuracy']:.4f}" if 'accuracy' in section
                           else ''))
  return section


def predict_from_workdir(config: ml_collections.ConfigDict, workdir: ckpt.Workdir,
                         parts: MethodParts, inputs: BackboneInputs,
                         dataset: datasets.Dataset, checked: predict.CheckedInput
                         ) -> dict[str, Any]:
  """``--mode=predict``: :func:`predict_new_data` with the workdir's trainables
  (:func:`restore_trainables`), or, for a method that fits a posterior, with the posterior's
  members fitted at them. Returns the ``predict`` section."""
  restored = restore_trainables(workdir, parts.training, parts.setup)
  if parts.fit_posterior:  # the posterior's members, fitted at the restored trainables
    restored = restored._replace(
        trainables=parts.fit_posterior(restored.trainables).trainables)
  return predict_new_data(config, workdir, restored, parts.predictor, inputs.splits, dataset,
                          inputs.backbone, checked)


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = 'train',
        request: predict.PredictRequest | None = None) -> dict[str, Any] | None:
  """Trains (``mode='train'``) and/or evaluates (``'eval'``); returns the results dict. With
  ``mode='predict'``, scores ``request``'s input instead and returns its ``predict``
  section."""
  # --- Config, mesh and workdir (cheap checks first) ------------------------------------
  validate_config(config)
  if mode == 'predict':
    if request is None:
      raise ValueError("mode='predict' needs a PredictRequest")
    request.check()
  tfds.disable_progress_bar()
  mesh, members = join_processes_and_make_mesh(config)
  run_dir = open_workdir(config, workdir, mode, members)
  # Closed on every way out: its background threads must not outlive an error.
  with contextlib.closing(run_dir.checkpointer):

    # --- Data -----------------------------------------------------------------------------
    # Process 0 prepares the data first: processes sharing a data_dir must not race to write it.
    with _process_zero_first('data prepared'):
      dataset, sources, ood_sets = load_data(config, workdir)

    if mode == 'predict':  # a bad input file fails here, before the model loads
      checked = predict.check_input(request, _input_columns(config, dataset, request))

    # --- Backbone, its input transforms and the evaluation splits -------------------------
    inputs = load_backbone_and_splits(config, dataset, sources, ood_sets)

    # --- Method (decompose, initialise members), train state, jitted steps ----------------
    parts = build_method_parts(config, inputs, mesh, sources['train'])

    # --- Predict: score new data with the best checkpoint (or the trainables file) --------
    if mode == 'predict':
      return predict_from_workdir(config, run_dir, parts, inputs, dataset, checked)

    # --- Train loop -----------------------------------------------------------------------
    if mode == 'train':
      train_members(config, run_dir, parts, inputs, sources['train'], members, mesh)

    # --- Evaluate the best checkpoint, save its trainables, report ------------------------
    return evaluate_and_report(config, run_dir, parts, inputs, dataset, sources, mesh, members)
