"""The training loop: resume, step, validate, checkpoint, stop cleanly on signals.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time

import jax
import numpy as np
from tqdm import tqdm

from sve_jax.data import pipeline
from sve_jax.eval import report
from sve_jax.train import checkpoint as ckpt
from sve_jax.train import sharding


class TrainingInterrupted(RuntimeError):
  """SIGTERM/SIGINT arrived; a checkpoint was written and the run can be resumed."""


def _write_jsonl(path: str, record: dict) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(report.to_jsonable(record)) + '\n')


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
