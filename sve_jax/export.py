"""The "<1%" file: an ensemble's trainables alone, portable, as ``.safetensors``.

Together with the backbone checkpoint (and the same rules), this file turns the backbone into
the ensemble: :func:`sve_jax.decompose` the backbone, then :func:`load_trainables`. A training
run writes its best checkpoint's trainables to ``<workdir>/trainables.safetensors``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from sve_jax import factorize
from sve_jax import tree as tree_lib
from sve_jax.tree import PyTree

#: The file's name in a run's workdir (written after training, read by ``--mode=predict``
#: when the best checkpoint is gone).
TRAINABLES_FILENAME = 'trainables.safetensors'


class CheckpointError(RuntimeError):
  """The run's own checkpoints (this trainables file, and the orbax train state of
  :mod:`sve_jax.train.checkpoint`): none usable, or one that does not belong to this run.
  Foreign weight files raise :class:`sve_jax.models.weights_io.WeightsError`."""


def factors_fingerprint(frozen: PyTree) -> float:
  """A float summarising the frozen tree (U, Vᵀ and shared leaves), to detect another backbone.

  U and Vᵀ alone are blind to rescaled weights, so the shared leaves (embeddings, norms) count
  too.
  """
  leaves = jax.tree_util.tree_leaves(frozen)  # arrays only: U, Vᵀ and shared leaves
  return float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in leaves))


def check_fingerprint(meta: Mapping[str, Any], now: float, where: str) -> None:
  """Raises if a checkpoint was made with different frozen factors (another backbone).

  ``now``: :func:`factors_fingerprint` of this run's frozen tree (computed once per run: it
  reads every frozen leaf).
  """
  saved = meta.get('factors_fingerprint')
  if saved is not None and not np.isclose(saved, now, rtol=1e-5):
    raise CheckpointError(
        f'{where} was trained on different frozen factors (fingerprint {saved:.6g} vs '
        f'{now:.6g} now): another backbone checkpoint, rules or dtype?')


def save_trainables(path: str, trainables: PyTree, metadata: Mapping[str, Any] | None = None,
                    frozen: PyTree | None = None) -> str:
  """Writes the trainables alone to a ``.safetensors`` file, keyed by '/'-joined paths.

  Args:
    path: destination, ``.safetensors``.
    trainables: the per-member tree.
    metadata: JSON-serialisable facts to store (backbone name, rules, M, ...).
    frozen: if given, its fingerprint is stored and checked by :func:`load_trainables`.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  flat = {'/'.join(p): np.asarray(jax.device_get(v))
          for p, v in tree_lib.flatten_paths(trainables).items()}
  meta = dict(metadata or {})
  if frozen is not None:
    meta['factors_fingerprint'] = factors_fingerprint(frozen)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  save_file(flat, path, metadata={'sve_jax': json.dumps(meta)})
  return path


def load_trainables(path: str, frozen: PyTree | None = None,
                    like: PyTree | None = None) -> tuple[dict, dict]:
  """Reads a file written by :func:`save_trainables`: ``(trainables, metadata)``.

  Args:
    path: the ``.safetensors`` file.
    frozen: if given, the file must have been written with frozen factors of the same
      fingerprint (:func:`check_fingerprint`), and, unless ``like`` is given, one member's
      values must have the shapes :func:`factorize.member_shapes` of ``frozen`` gives (the
      SVE family's trainables).
    like: if given, the trainables the file must match leaf for leaf: the same paths and
      whole shapes, member axis included (arrays or ``jax.ShapeDtypeStruct``; a run's own
      trainables, of any method).

  Raises:
    CheckpointError: naming ``path``: an unreadable file, or (with ``frozen`` or ``like``)
      trainables that do not fit them or a fingerprint of other frozen factors.
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  try:
    with safe_open(path, framework='numpy') as f:
      meta = json.loads((f.metadata() or {}).get('sve_jax', '{}'))
      flat = {k: f.get_tensor(k) for k in f.keys()}
  except Exception as e:
    raise CheckpointError(
        f'cannot read trainables file {path}: {type(e).__name__}: {e}') from e
  trainables = tree_lib.nest({tuple(key.split('/')): value for key, value in flat.items()})
  if frozen is not None:
    check_fingerprint(meta, factors_fingerprint(frozen), path)
  if like is not None:
    _check_shapes(_shapes(like), _shapes(trainables), path, 'shapes')
  elif frozen is not None:
    _check_shapes(factorize.member_shapes(frozen), _shapes(trainables, member_axis=True),
                  path, 'per-member shapes')
  return trainables, meta


def _shapes(tree: PyTree, member_axis: bool = False) -> dict[str, tuple[int, ...]]:
  """``{'/'-joined path: shape}`` of a tree's leaves; ``member_axis``: without the first axis."""
  return {'/'.join(p): tuple(np.shape(v))[int(member_axis):]
          for p, v in tree_lib.flatten_paths(tree).items()}


def _check_shapes(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]],
                  path: str, what: str) -> None:
  """Raises :class:`CheckpointError` naming ``path`` and the first paths that differ."""
  if expected != got:
    bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
    raise CheckpointError(
        f'{path}: trainables do not fit this backbone at {bad[:5]}: expected {what} '
        f'{[expected.get(k) for k in bad[:5]]}, file has {[got.get(k) for k in bad[:5]]}')
