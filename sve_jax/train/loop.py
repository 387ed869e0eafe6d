"""The training loop: resume, step, validate, checkpoint, stop cleanly on signals.

Training batches come from a grain dataset (:func:`train_batches`). Each checkpoint saves the
data iterator's state with the model, and a resumed run restores it, so an interrupted run
continues with exactly the batches an uninterrupted one gets.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import time
from typing import Any, Callable, NamedTuple

import ml_collections

import jax
import numpy as np
from tqdm import tqdm

from sve_jax import export
from sve_jax.data import pipeline
from sve_jax.train import checkpoint as ckpt
from sve_jax.train import scalar_log
from sve_jax.train import sharding


class TrainingInterrupted(RuntimeError):
  """SIGTERM/SIGINT arrived; a checkpoint was written and the run can be resumed."""


class Training(NamedTuple):
  """What the training loop runs: the placed state and factors, and the jitted step.

  Attributes:
    state: the train state on the mesh (members sharded over ``member``).
    abstract_state: its shapes, dtypes and shardings, to restore checkpoints into.
    frozen: the method's frozen tree, placed on the mesh as ``config.mesh.frozen`` says.
    fingerprint: :func:`sve_jax.export.factors_fingerprint` of ``frozen`` (computed once:
      it reads every frozen leaf), stored with and checked against every checkpoint.
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
  fingerprint: float
  train_step: Callable
  learning_rate: float
  total_steps: int
  steps_per_epoch: int


class TrainData(NamedTuple):
  """The training split and how it is read.

  Attributes:
    source: the training split (random access, see :mod:`sve_jax.data.pipeline`).
    transform: raw batch -> ``{'inputs', 'label'}``.
    member_streams: ``M > 0``: member ``m`` reads its own stream (:func:`train_batches`);
      0: all members share one.
  """
  source: Any
  transform: Callable[[dict], dict]
  member_streams: int = 0


def train_batches(config: ml_collections.ConfigDict, source: Any,
                  transform: Callable[[dict], dict] | None, member_streams: int = 0):
  """The training batches, one per step, as a ``grain.MapDataset`` (see :mod:`pipeline`).

  With ``member_streams = M > 0`` member ``m`` reads its own stream, seeded
  ``config.seed + m`` (its own order and augmentation), and the batches are stacked on a
  leading member axis: ``(M, B, ...)`` leaves. The streams advance together, so one iterator
  state resumes all of them exactly.
  """
  kwargs = dict(global_batch_size=config.batch_size, num_epochs=config.num_epochs,
                process_index=jax.process_index(), process_count=jax.process_count(),
                transform=transform)
  if not member_streams:
    return pipeline.train_dataset(source, seed=config.seed, **kwargs)
  return pipeline.member_train_dataset(
      source, seeds=[config.seed + m for m in range(member_streams)], **kwargs)


@contextlib.contextmanager
def _stop_requests():
  """Yields a dict whose ``'signal'`` names a SIGTERM/SIGINT received inside the block.

  The handlers only record the request, so the loop can finish its step and checkpoint.
  """
  stop = {'signal': None}

  def request_stop(signum, _):
    stop['signal'] = signal.Signals(signum).name

  previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield stop
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _resume(workdir: ckpt.Workdir, training: Training, num_workers: int):
  """``(state, data iterator state, best validation accuracy)`` of the latest checkpoint.

  Without a checkpoint: ``(training.state, None, -1)``, a fresh start.
  """
  restored = workdir.checkpointer.restore_latest(training.abstract_state)
  if restored is None:
    return training.state, None, -1.
  state, meta = restored
  where = f'{workdir.path}/checkpoints/latest'
  export.check_fingerprint(meta, training.fingerprint, where)
  data_state = ckpt.data_iterator_state(meta, where, num_workers)
  step = int(state.step)
  logging.info('resumed at step %d (epoch %d, batch %d)', step,
               *divmod(step, training.steps_per_epoch))
  return state, data_state, float(meta.get('best_val_accuracy', -1.))


class Progress:
  """The progress bar, and the losses and validations logged to ``metrics.jsonl`` and
  TensorBoard (:class:`~sve_jax.train.scalar_log.ScalarLog`).

  ``Progress(config, workdir, step, total_steps)`` starts the bar at ``step``; :meth:`step`
  counts one optimiser step, logging every ``config.log_every_steps`` (and the last);
  :meth:`validation` logs one validation. Only process 0 writes the file.
  """

  def __init__(self, config, workdir: str, step: int, total_steps: int):
    self.every = config.log_every_steps
    self.batch_size = config.batch_size
    self.total_steps = total_steps
    self.write = jax.process_index() == 0  # one line per step, whatever the process count
    self.log = scalar_log.ScalarLog(workdir, enabled=self.write)
    self.bar = tqdm(total=total_steps, initial=step, desc='train', unit='step',
                    disable=not self.write)
    self.call_start = time.time()
    self.n_last, self.seconds_last = 0, 0.

  def close(self) -> None:
    """Closes the bar and flushes the TensorBoard events."""
    self.bar.close()
    self.log.close()

  def start_call(self) -> None:
    """Marks the start of a call of the (multi-)step: its batches are read from here."""
    self.call_start = time.time()

  def step(self, step: int, epoch: int, loss: float, grad_norm: float, seconds: float) -> None:
    """Counts a step that took ``seconds`` (its share of its call's wall time); every
    ``log_every_steps`` (and the last) logs loss and throughput since the last log.

    The time is per step, not the clock at logging: a multi-step call's steps all reach the
    host at once, so two logs within one call would otherwise divide by ~0 s.
    """
    self.n_last += self.batch_size
    self.seconds_last += seconds
    if step % self.every == 0 or step == self.total_steps:
      rate = self.n_last / max(self.seconds_last, 1e-9)
      self.n_last, self.seconds_last = 0, 0.
      self.log.write({'step': step, 'epoch': epoch, 'loss': loss, 'grad_norm': grad_norm,
                      'examples_per_sec': rate})
      self.bar.set_postfix(loss=f'{loss:.4f}', ex_per_s=f'{rate:.1f}')
    self.bar.update(1)

  def validation(self, step: int, epoch: int, val, improved: bool) -> None:
    """Logs one validation: each key ``k`` as ``val_k``, but OOD scores (``ood_*``) as they
    are (TensorBoard ``ood/*``)."""
    self.log.write({'step': step, 'epoch': epoch,
                    **{k if k.startswith('ood_') else f'val_{k}': v for k, v in val.items()}})
    ood = f' ood auroc mi {val["ood_auroc_mi"]:.4f}' if 'ood_auroc_mi' in val else ''
    tqdm.write(f'step {step}: val accuracy {val["accuracy"]:.4f} nll {val["nll"]:.4f} '
               f'ece {val["ece"]:.4f}{ood}' + (' (best)' if improved else ''))


def _every(interval: int, step: int) -> bool:
  """Whether ``step`` is a multiple of ``interval`` (0: never)."""
  return bool(interval) and step % interval == 0


def chunk_end(step: int, config: ml_collections.ConfigDict, total_steps: int,
              steps_per_epoch: int) -> int:
  """The step the next call of the multi-step ends at, from ``step``.

  The next multiple of ``config.steps_per_execution``, or earlier: the next step that
  validates or checkpoints by count (epoch end, ``eval_every_steps``,
  ``checkpoint.every_steps``) or the last. Chunk ends depend on the step alone, so a resumed
  run makes the same calls as an uninterrupted one.
  """
  def next_multiple(interval: int) -> int:
    return (step // interval + 1) * interval if interval else total_steps

  return min(next_multiple(config.steps_per_execution), next_multiple(steps_per_epoch),
             next_multiple(config.eval_every_steps),
             next_multiple(config.checkpoint.every_steps), total_steps)


def _next_chunk(batches, size: int):
  """``size`` batches from ``batches``, stacked on a new leading (steps) axis."""
  chunk = [next(batches) for _ in range(size)]
  return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *chunk)


def _check_finite(loss: float, step: int, steps_per_epoch: int, workdir: str) -> None:
  """Raises FloatingPointError, naming step ``step`` and its epoch, on a NaN/inf loss."""
  if not np.isfinite(loss):
    raise FloatingPointError(
        f'loss is {loss} at step {step} (epoch {(step - 1) // steps_per_epoch}); stopping. '
        f'The last good checkpoint under {workdir}/checkpoints/latest is intact: lower '
        'config.optim.learning_rate or check the data, then rerun to resume.')


def log_steps(metrics: dict[str, Any], step: int, progress: Progress, steps_per_epoch: int,
              workdir: str) -> int:
  """Checks and logs each step of one call's stacked ``metrics``; returns the step reached.

  ``metrics['loss']`` and ``metrics['grad_norm']`` hold one value per step of the call (the
  multi-step's stacked metrics); ``step`` is the step before the call. Each step's time is its
  share of the call's wall time since :meth:`Progress.start_call`.

  Raises:
    FloatingPointError: a NaN/inf loss, naming its step and epoch.
  """
  losses, grad_norms = (np.reshape(jax.device_get(metrics[k]), -1)
                        for k in ('loss', 'grad_norm'))
  seconds = (time.time() - progress.call_start) / losses.size  # the call has finished
  for loss, grad_norm in zip(losses, grad_norms):
    step += 1
    _check_finite(float(loss), step, steps_per_epoch, workdir)
    progress.step(step, step // steps_per_epoch, float(loss), float(grad_norm), seconds)
  return step


def _save(workdir: ckpt.Workdir, fingerprint: float, state: Any, batches: Any, workers: int,
          best_val: float, best: bool) -> float:
  """Checkpoints ``state`` with the data iterator's position, the best validation accuracy so
  far, the factors' fingerprint and the run's identity (as the best one too if ``best``);
  returns the monotonic time of the save."""
  meta = {ckpt.DATA_ITERATOR: ckpt.data_iterator_meta(batches, workers), 'step': int(state.step),
          'best_val_accuracy': best_val, 'factors_fingerprint': fingerprint,
          'identity': workdir.identity}
  workdir.checkpointer.save(state, meta, best=best)
  return time.monotonic()


def _validate(validate: Callable[[Any], dict[str, float]], trainables: Any, best_val: float,
              progress: Progress, step: int, epoch: int) -> tuple[float, bool]:
  """Validates ``trainables`` at ``step`` (``epoch`` epochs done) and logs it; returns the
  best validation accuracy so far and whether this one improved on ``best_val``."""
  val = validate(trainables)
  improved = val['accuracy'] > best_val
  progress.validation(step, epoch, val, improved)
  return max(best_val, val['accuracy']), improved


def train_loop(config: ml_collections.ConfigDict, training: Training, workdir: ckpt.Workdir,
               data: TrainData, validate: Callable[[Any], dict[str, float]],
               mesh: jax.sharding.Mesh) -> Any:
  """The loop: resume, step, validate each epoch, checkpoint, stop cleanly on signals.

  Validation (``validate(trainables) -> {accuracy, nll, ...}``, logged as ``val_*``, its OOD
  scores as ``ood_*``) runs at each epoch end, the last step and every
  ``config.eval_every_steps`` steps, and saves a checkpoint (the best by validation accuracy).
  Checkpoints, with the data iterator's state, also every ``config.checkpoint.every_steps``
  steps and ``config.checkpoint.every_minutes`` after the last save (what a SIGKILL loses).

  Returns:
    The train state after the last step.

  Raises:
    TrainingInterrupted: SIGTERM/SIGINT arrived (a checkpoint was written first).
    FloatingPointError: a NaN/inf loss.
  """
  workers = config.data.num_workers  # grain's iterator state has one form per worker count
  state, data_state, best_val = _resume(workdir, training, workers)
  total_steps, steps_per_epoch = training.total_steps, training.steps_per_epoch
  step = int(jax.device_get(state.step))
  if step >= total_steps:
    return state
  batches = pipeline.iterate(train_batches(config, data.source, data.transform,
                                           data.member_streams),
                             num_workers=workers, state=data_state)

  def save(best=False):
    return _save(workdir, training.fingerprint, state, batches, workers, best_val, best)

  progress, last_save = Progress(config, workdir.path, step, total_steps), time.monotonic()
  try:
    with _stop_requests() as stop:
      while True:
        end = chunk_end(step, config, total_steps, steps_per_epoch)
        progress.start_call()
        chunk = sharding.shard_batch(_next_chunk(batches, end - step), mesh,
                                     per_member=data.member_streams > 0, steps_axis=True)
        state, metrics = training.train_step(state, training.frozen, chunk)
        step = log_steps(metrics, step, progress, steps_per_epoch, workdir.path)
        last = step >= total_steps
        if step % steps_per_epoch == 0 or last or _every(config.eval_every_steps, step):
          best_val, improved = _validate(validate, state.trainables, best_val, progress, step,
                                         step // steps_per_epoch)
          last_save = save(best=improved)
        elif (_every(config.checkpoint.every_steps, step)
              or ckpt.wall_time_due(last_save, config.checkpoint.every_minutes)):
          last_save = save()
        if last:
          break
        if stop['signal']:
          save()
          raise TrainingInterrupted(
              f'{stop["signal"]} at step {step}: checkpoint written to {workdir.path}/'
              'checkpoints/latest; rerun the same command to resume')
  finally:
    progress.close()
    batches.close()
    # Asynchronous saves: on disk before resuming, evaluating or failing.
    workdir.checkpointer.wait()
  return state
