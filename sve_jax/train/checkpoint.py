"""Checkpoints with orbax: latest-N for resuming and best-by-validation.

(The portable file of the trainables alone is :mod:`sve_jax.export`.)

A checkpoint holds the :class:`~sve_jax.train.state.TrainState` (trainables, optimiser state,
step, rng) and a JSON ``meta`` item (the grain data iterator's state, best validation accuracy,
a fingerprint of the frozen factors). The frozen U, Vᵀ are never written at each save: they
are recomputed from the backbone at start-up, and the fingerprint checks that they are the
same ones.

Layout under ``<workdir>/checkpoints``: ``latest/<step>`` (the last ``keep`` saves) and
``best/<step>`` (the one with the best validation accuracy).

Saves are atomic: orbax writes ``<step>.orbax-checkpoint-tmp-*`` and renames it when complete,
so a process killed mid-save leaves the previous checkpoints intact; the partial directory is
ignored and removed when the next run opens the workdir. With ``asynchronous=True`` a save
copies the state to host memory and returns; the files are written in a background thread.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from typing import Any, Mapping, NamedTuple

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from sve_jax.export import CheckpointError
from sve_jax.tree import PyTree



class Checkpointer:
  """Latest-N and best-by-metric orbax managers over one workdir.

  Args:
    workdir: the run's folder; checkpoints go to ``<workdir>/checkpoints``.
    keep: how many of the latest checkpoints to keep.
    asynchronous: write in a background thread (see the module docstring); call
      :meth:`wait` before relying on the files.
  """

  def __init__(self, workdir: str, keep: int = 2, *, asynchronous: bool = False):
    root = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    opts = lambda n: ocp.CheckpointManagerOptions(
        max_to_keep=n, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=asynchronous)
    self.latest = ocp.CheckpointManager(os.path.join(root, 'latest'), options=opts(keep))
    self.best = ocp.CheckpointManager(os.path.join(root, 'best'), options=opts(1))
    self.asynchronous = asynchronous

  def save(self, state: PyTree, meta: Mapping[str, Any], *, best: bool = False) -> None:
    """Saves ``state`` at ``state.step`` to latest (and to best when ``best``).

    Raises:
      CheckpointError: the write failed (e.g. the disk is full); the message names the
        directory and the earlier checkpoints, which stay usable.
    """
    step = int(jax.device_get(state.step))
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              meta=ocp.args.JsonSave(dict(meta)))
    for manager in [self.latest] + ([self.best] if best else []):
      other = self.best if manager is self.latest else self.latest
      with _explained_save_errors(other):
        # orbax names its multi-process barriers by step, not by directory: two managers
        # writing at once (latest and best of one step) would join each other's barriers.
        other.wait_until_finished()
      with _explained_save_errors(manager):
        if step in manager.all_steps():
          manager.wait_until_finished()
          manager.delete(step)  # e.g. saved at an interruption, then again as best
        manager.save(step, args=args, force=True)
        if not self.asynchronous:
          manager.wait_until_finished()

  def wait(self) -> None:
    """Blocks until every asynchronous save is on disk.

    Raises:
      CheckpointError: a background write failed (see :meth:`save`).
    """
    for manager in (self.latest, self.best):
      with _explained_save_errors(manager):
        manager.wait_until_finished()

  def check_identity(self, identity: Mapping[str, Any]) -> None:
    """Raises if the newest latest or best checkpoint was written by another kind of run.

    Reads only the small JSON ``meta`` item, so it is cheap and comes before any restore
    (another run's array shapes would otherwise fail deep inside orbax).

    Args:
      identity: what this run is (backbone, method, number of members, ...), as stored in
        ``meta['identity']`` by :meth:`save`'s caller.

    Raises:
      CheckpointError: naming the checkpoint and each differing field.
    """
    for manager in (self.latest, self.best):
      step = manager.latest_step()
      if step is None:
        continue
      try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      except Exception:  # pylint: disable=broad-except
        continue  # unreadable: restoring falls back to an older one and says so
      _check_saved_identity(meta['meta'], identity, f'{manager.directory}/{step}')

  def restore_latest(self, abstract_state: PyTree) -> tuple[PyTree, dict] | None:
    """The newest readable checkpoint, falling back to older ones if it is corrupt.

    Returns:
      ``(state, meta)``, or ``None`` if there is no checkpoint at all.

    Raises:
      CheckpointError: checkpoints exist but none can be read.
    """
    return _restore_newest(self.latest, abstract_state)

  def restore_best(self, abstract_state: PyTree) -> tuple[PyTree, dict]:
    restored = _restore_newest(self.best, abstract_state)
    if restored is None:
      raise CheckpointError(f'no best checkpoint under {self.best.directory}; train first')
    return restored

  def close(self) -> None:
    """Waits for pending saves (see :meth:`wait`) and releases the managers."""
    try:
      self.wait()
    finally:
      for manager in (self.latest, self.best):
        _await_startup_cleanup(manager)
        manager.close()


def _await_startup_cleanup(manager: ocp.CheckpointManager) -> None:
  """Waits for the removal of partial saves that a manager starts in a thread when it opens.

  orbax (0.12) awaits it only in ``save``, not in ``close``: a process that opens a workdir
  and exits without saving (a refused ``--mode=predict``) would otherwise print the thread's
  traceback as the interpreter shuts down.
  """
  await_cleanup = getattr(manager, '_maybe_await_cleanup_tmp_directory', None)
  if await_cleanup is not None:
    await_cleanup()


class Workdir(NamedTuple):
  """A run's folder: where it lives, its checkpoints, and what its checkpoints must match.

  Attributes:
    path: the ``--workdir``.
    checkpointer: its :class:`Checkpointer`.
    identity: this run's identity (backbone, method, members), stored in every checkpoint's
      ``meta['identity']`` and checked by :meth:`Checkpointer.check_identity`.
  """
  path: str
  checkpointer: Checkpointer
  identity: dict[str, Any]


@contextlib.contextmanager
def _explained_save_errors(manager: ocp.CheckpointManager):
  """Turns an OS error of a save (disk full, permissions) into a CheckpointError.

  The message names the directory and the committed checkpoints, which orbax's atomic rename
  kept out of the failed write's way. An asynchronous write fails in the background and is
  reported by the next save or wait, hence no step number.
  """
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    cause = _os_error_in(error)
    if cause is None:
      raise
    hint = 'the disk is full: free space' if cause.errno == errno.ENOSPC else 'fix the workdir'
    raise CheckpointError(
        f'writing a checkpoint under {manager.directory} failed ({type(cause).__name__}: '
        f'{cause}). Earlier checkpoint(s) {_committed_steps(manager)} are intact; {hint}, '
        'then rerun the same command to resume from the newest.') from error


def _os_error_in(error: BaseException | None) -> OSError | None:
  """The first OSError in ``error``'s chain of causes (orbax wraps background errors)."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, OSError):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def _committed_steps(manager: ocp.CheckpointManager) -> list[int]:
  """Steps whose checkpoint is complete on disk (temporary directories are not steps)."""
  try:
    manager.reload()
    return sorted(manager.all_steps())
  except Exception:  # pylint: disable=broad-except
    return []


def wall_time_due(last_save: float, every_minutes: float) -> bool:
  """Whether ``every_minutes`` have passed since ``last_save`` (a ``time.monotonic()`` value).

  A save is collective, so every process must decide alike: with several processes
  process 0's clock decides, and all of them must call this at the same step.
  ``every_minutes <= 0`` disables time-based saves.
  """
  if every_minutes <= 0:
    return False
  due = time.monotonic() - last_save >= every_minutes * 60
  if jax.process_count() > 1:
    due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
  return due


def _restore_newest(manager: ocp.CheckpointManager, abstract_state: PyTree):
  manager.reload()
  steps = sorted(manager.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      return restored['state'], dict(restored['meta'])
    except Exception as e:  # orbax raises many types for damaged files
      logging.warning('checkpoint %s/%d is unreadable (%s: %s); trying an older one',
                      manager.directory, step, type(e).__name__, str(e)[:200])
      errors.append(f'step {step}: {type(e).__name__}: {str(e)[:200]}')
  if steps:
    raise CheckpointError(f'no readable checkpoint under {manager.directory}: '
                          + '; '.join(errors))
  return None


#: Identity keys added after checkpoints were first written, with the value an older
#: checkpoint, which lacks them, implies.
IDENTITY_DEFAULTS = {'adapted_blocks': -1}


def _check_saved_identity(meta: Mapping[str, Any], identity: Mapping[str, Any],
                          where: str) -> None:
  """Raises if a checkpoint's ``meta['identity']`` differs from this run's ``identity``.

  ``identity`` holds what makes checkpoints incompatible (backbone, method, number of
  members); a checkpoint written before identities were recorded passes.
  """
  saved = meta.get('identity')
  if saved is None:
    return
  saved = {**IDENTITY_DEFAULTS, **saved}
  differ = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
  if differ:
    details = ', '.join(f'{k}: checkpoint {a!r}, this run {b!r}' for k, (a, b) in differ.items())
    raise CheckpointError(
        f'{where} belongs to another run ({details}). Use a fresh --workdir for this config, '
        'or rerun with the config that wrote it.')


#: ``meta`` key of the training data iterator's state (:func:`data_iterator_meta`).
DATA_ITERATOR = 'data_iterator'


def data_iterator_meta(iterator, num_workers: int) -> dict[str, Any]:
  """``meta[DATA_ITERATOR]``: a grain iterator's ``get_state()`` and its worker count."""
  return {'num_workers': num_workers, 'state': iterator.get_state()}


def data_iterator_state(meta: Mapping[str, Any], where: str, num_workers: int) -> dict[str, Any]:
  """The training data iterator's state saved in a checkpoint's ``meta``, for ``set_state``.

  Raises:
    CheckpointError: the state was saved with another ``config.data.num_workers`` (grain's
      state has one form per worker count); or ``meta`` holds a data ``position`` instead
      (another input pipeline's data order, which grain's shuffle does not reproduce); or
      it holds no data state at all.
  """
  if DATA_ITERATOR in meta:
    saved = meta[DATA_ITERATOR]
    if saved['num_workers'] != num_workers:
      raise CheckpointError(
          f'{where} saved its data iterator with config.data.num_workers='
          f'{saved["num_workers"]}, this run has {num_workers}: resume with '
          f'--config.data.num_workers={saved["num_workers"]}.')
    return dict(saved['state'])
  if 'position' in meta:
    raise CheckpointError(
        f'{where} was written by the input pipeline before grain (meta holds a data '
        f'position {dict(meta["position"])}); its data order cannot be continued exactly. '
        'Start again in a fresh --workdir, or finish this run with the version that began it.')
  raise CheckpointError(f'{where} holds no data iterator state (meta keys {sorted(meta)}).')
