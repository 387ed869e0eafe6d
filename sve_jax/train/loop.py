"""The training loop: resume, step, validate, checkpoint, stop cleanly on signals.

Training batches come from a grain dataset (:func:`train_batches`). Each checkpoint saves the
data iterator's state with the model, and a resumed run restores it, so an interrupted run
continues with exactly the batches an uninterrupted one gets.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time

import jax
import numpy as np
from tqdm import tqdm

from sve_jax import export
from sve_jax.data import pipeline
from sve_jax.eval import report
from sve_jax.train import checkpoint as ckpt
from sve_jax.train import sharding


class TrainingInterrupted(RuntimeError):
  """SIGTERM/SIGINT arrived; a checkpoint was written and the run can be resumed."""


def _write_jsonl(path: str, record: dict) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(report.to_jsonable(record)) + '\n')


def train_batches(config, source, transform, member_streams: int = 0):
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


def _resume(checkpointer, state, abstract_state, fingerprint: float, workdir: str,
            steps_per_epoch: int, num_workers: int):
  """``(state, data iterator state, best validation accuracy)`` of the latest checkpoint.

  Without a checkpoint: ``(state, None, -1)``, a fresh start.
  """
  restored = checkpointer.restore_latest(abstract_state)
  if restored is None:
    return state, None, -1.
  state, meta = restored
  where = f'{workdir}/checkpoints/latest'
  export.check_fingerprint(meta, fingerprint, where)
  data_state = ckpt.data_iterator_state(meta, where, num_workers)
  step = int(state.step)
  logging.info('resumed at step %d (epoch %d, batch %d)', step, *divmod(step, steps_per_epoch))
  return state, data_state, float(meta.get('best_val_accuracy', -1.))


class _Progress:
  """The progress bar, and the losses and validations logged to ``metrics.jsonl``."""

  def __init__(self, config, workdir: str, step: int, total_steps: int):
    self.every = config.log_every_steps
    self.batch_size = config.batch_size
    self.total_steps = total_steps
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.write = jax.process_index() == 0  # one line per step, whatever the process count
    self.bar = tqdm(total=total_steps, initial=step, desc='train', unit='step',
                    disable=not self.write)
    self.call_start = time.time()
    self.n_last, self.seconds_last = 0, 0.

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
      if self.write:
        _write_jsonl(self.path, {'step': step, 'epoch': epoch, 'loss': loss,
                                 'grad_norm': grad_norm, 'examples_per_sec': rate})
      self.bar.set_postfix(loss=f'{loss:.4f}', ex_per_s=f'{rate:.1f}')
    self.bar.update(1)

  def validation(self, step: int, epoch: int, val, improved: bool) -> None:
    if self.write:
      _write_jsonl(self.path, {'step': step, 'epoch': epoch,
                               **{f'val_{k}': v for k, v in val.items()}})
    tqdm.write(f'step {step}: val accuracy {val["accuracy"]:.4f} nll {val["nll"]:.4f} '
               f'ece {val["ece"]:.4f}' + (' (best)' if improved else ''))


def _every(interval: int, step: int) -> bool:
  """Whether ``step`` is a multiple of ``interval`` (0: never)."""
  return bool(interval) and step % interval == 0


def chunk_end(step: int, config, total_steps: int, steps_per_epoch: int) -> int:
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


def _log_steps(metrics, step: int, progress: _Progress, steps_per_epoch: int,
               workdir: str) -> int:
  """Checks and logs each step of one call's stacked ``metrics``; returns the step reached."""
  losses, grad_norms = (np.reshape(jax.device_get(metrics[k]), -1)
                        for k in ('loss', 'grad_norm'))
  seconds = (time.time() - progress.call_start) / losses.size  # the call has finished
  for loss, grad_norm in zip(losses, grad_norms):
    step += 1
    _check_finite(float(loss), step, steps_per_epoch, workdir)
    progress.step(step, step // steps_per_epoch, float(loss), float(grad_norm), seconds)
  return step


def train_loop(config, workdir, checkpointer, state, abstract_state, frozen, train_step,
               validate, sources, transform, total_steps, steps_per_epoch, fingerprint, mesh,
               identity, member_streams: int = 0):
  """The loop: resume, step, validate each epoch, checkpoint, stop cleanly on signals.

  Validation (``validate(trainables) -> {accuracy, nll, ...}``, written to metrics.jsonl as
  ``val_*``) runs at each epoch end, at the last step and every ``config.eval_every_steps``
  steps (learning curves); each one saves a checkpoint, the best by validation accuracy.
  Checkpoints (with the data iterator's state): at each epoch end, every
  ``config.checkpoint.every_steps`` steps, and ``config.checkpoint.every_minutes`` after the
  last save (bounds the work a SIGKILL loses). ``member_streams``: :func:`train_batches`.
  """
  workers = config.data.num_workers  # grain's iterator state has one form per worker count
  state, data_state, best_val = _resume(checkpointer, state, abstract_state, fingerprint,
                                        workdir, steps_per_epoch, workers)
  step = int(jax.device_get(state.step))
  if step >= total_steps:
    return state
  batches = pipeline.iterate(train_batches(config, sources['train'], transform, member_streams),
                             num_workers=workers, state=data_state)

  def save(best=False):
    meta = {ckpt.DATA_ITERATOR: ckpt.data_iterator_meta(batches, workers), 'step': int(state.step),
            'best_val_accuracy': best_val, 'factors_fingerprint': fingerprint, 'identity': identity}
    checkpointer.save(state, meta, best=best)
    return time.monotonic()

  progress, last_save = _Progress(config, workdir, step, total_steps), time.monotonic()
  try:
    with _stop_requests() as stop:
      while True:
        end = chunk_end(step, config, total_steps, steps_per_epoch)
        progress.start_call()
        chunk = sharding.shard_batch(_next_chunk(batches, end - step), mesh,
                                     per_member=member_streams > 0, steps_axis=True)
        state, metrics = train_step(state, frozen, chunk)
        step = _log_steps(metrics, step, progress, steps_per_epoch, workdir)
        epoch = step // steps_per_epoch  # epochs done
        last = step >= total_steps
        if step % steps_per_epoch == 0 or last or _every(config.eval_every_steps, step):
          val = validate(state.trainables)
          improved = val['accuracy'] > best_val
          best_val = max(best_val, val['accuracy'])
          progress.validation(step, epoch, val, improved)
          last_save = save(best=improved)
        elif (_every(config.checkpoint.every_steps, step)
              or ckpt.wall_time_due(last_save, config.checkpoint.every_minutes)):
          last_save = save()
        if last:
          break
        if stop['signal']:
          save()
          raise TrainingInterrupted(
              f'{stop["signal"]} at step {step}: checkpoint written to {workdir}/checkpoints/'
              'latest; rerun the same command to resume')
  finally:
    progress.bar.close()
    batches.close()
    checkpointer.wait()  # asynchronous saves: on disk before resuming, evaluating or failing
  return state
