"""Checkpoints with orbax: latest-N for resuming, best-by-validation, and the trainables file.

A checkpoint holds the :class:`~sve_jax.train_state.TrainState` (trainables, optimiser state,
step, rng) and a JSON ``meta`` item (data position, best validation accuracy, a fingerprint of
the frozen factors). The frozen U, Vᵀ are never written at each save: they are recomputed
from the backbone at start-up, and the fingerprint checks that they are the same ones.

Layout under ``<workdir>/checkpoints``: ``latest/<step>`` (the last ``keep`` saves) and
``best/<step>`` (the one with the best validation accuracy).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from sve_jax import factorize

PyTree = Any


class CheckpointError(RuntimeError):
  """No usable checkpoint, or one that does not belong to this run."""


def factors_fingerprint(frozen: PyTree) -> float:
  """A float summarising the frozen tree (U, Vᵀ and shared leaves), to detect another backbone.

  U and Vᵀ alone are blind to rescaled weights, so the shared leaves (embeddings, norms) count
  too.
  """
  leaves = jax.tree_util.tree_leaves(frozen)  # arrays only: U, Vᵀ and shared leaves
  return float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in leaves))


class Checkpointer:
  """Latest-N and best-by-metric orbax managers over one workdir."""

  def __init__(self, workdir: str, keep: int = 2):
    root = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    opts = lambda n: ocp.CheckpointManagerOptions(max_to_keep=n, create=True,
                                                  enable_async_checkpointing=False)
    self.latest = ocp.CheckpointManager(os.path.join(root, 'latest'), options=opts(keep))
    self.best = ocp.CheckpointManager(os.path.join(root, 'best'), options=opts(1))

  def save(self, state: PyTree, meta: Mapping[str, Any], *, best: bool = False) -> None:
    """Saves ``state`` at ``state.step`` to latest (and to best when ``best``)."""
    step = int(jax.device_get(state.step))
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              meta=ocp.args.JsonSave(dict(meta)))
    managers = [self.latest] + ([self.best] if best else [])
    for manager in managers:
      if step in manager.all_steps():
        manager.delete(step)  # e.g. saved at an interruption, then again as best
      manager.save(step, args=args, force=True)
      manager.wait_until_finished()

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
    self.latest.close()
    self.best.close()


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


def check_fingerprint(meta: Mapping[str, Any], frozen: PyTree, where: str) -> None:
  """Raises if a checkpoint was made with different frozen factors (another backbone)."""
  saved = meta.get('factors_fingerprint')
  now = factors_fingerprint(frozen)
  if saved is not None and not np.isclose(saved, now, rtol=1e-5):
    raise CheckpointError(
        f'{where} was trained on different frozen factors (fingerprint {saved:.6g} vs '
        f'{now:.6g} now): another backbone checkpoint, rules or dtype?')


# ---------------------------------------------------------------------------------------------
# The "<1%" file: only the SVE trainables, portable.
# ---------------------------------------------------------------------------------------------


def save_trainables(path: str, trainables: PyTree, metadata: Mapping[str, Any] | None = None,
                    frozen: PyTree | None = None) -> str:
  """Writes the trainables alone to a ``.safetensors`` file.

  Together with the backbone checkpoint (and the same rules), this file turns the backbone
  into the ensemble: ``decompose`` the backbone, then ``load_trainables``.

  Args:
    path: destination, ``.safetensors``.
    trainables: the per-member tree.
    metadata: JSON-serialisable facts to store (backbone name, rules, M, ...).
    frozen: if given, its fingerprint is stored and checked by :func:`load_trainables`.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  flat = {'/'.join(p): np.asarray(jax.device_get(v))
          for p, v in factorize.flatten_paths(trainables).items()}
  meta = dict(metadata or {})
  if frozen is not None:
    meta['factors_fingerprint'] = factors_fingerprint(frozen)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  save_file(flat, path, metadata={'sve_jax': json.dumps(meta)})
  return path


def load_trainables(path: str, frozen: PyTree | None = None) -> tuple[dict, dict]:
  """Reads a file written by :func:`save_trainables`: ``(trainables, metadata)``.

  Raises:
    CheckpointError: unreadable file, or (with ``frozen``) trainables that do not fit it.
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  try:
    with safe_open(path, framework='numpy') as f:
      meta = json.loads((f.metadata() or {}).get('sve_jax', '{}'))
      flat = {k: f.get_tensor(k) for k in f.keys()}
  except Exception as e:
    raise CheckpointError(f'cannot read trainables file {path}: {type(e).__name__}: {e}') from e
  trainables: dict = {}
  for key, value in flat.items():
    factorize.nested_set(trainables, tuple(key.split("/")), value)
  if frozen is not None:
    check_fingerprint(meta, frozen, path)
    expected = factorize.member_shapes(frozen)
    got = {'/'.join(p): tuple(v.shape[1:])
           for p, v in factorize.flatten_paths(trainables).items()}
    if expected != got:
      bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
      raise CheckpointError(
          f'{path}: trainables do not fit this backbone at {bad[:5]}: expected per-member '
          f'shapes {[expected.get(k) for k in bad[:5]]}, file has {[got.get(k) for k in bad[:5]]}')
  return trainables, meta
