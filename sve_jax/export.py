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
from sve_jax.train import checkpoint as ckpt

PyTree = Any


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
    meta['factors_fingerprint'] = ckpt.factors_fingerprint(frozen)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  save_file(flat, path, metadata={'sve_jax': json.dumps(meta)})
  return path


def load_trainables(path: str, frozen: PyTree | None = None) -> tuple[dict, dict]:
  """Reads a file written by :func:`save_trainables`: ``(trainables, metadata)``.

  Raises:
    sve_jax.train.checkpoint.CheckpointError: unreadable file, or (with ``frozen``)
      trainables that do not fit it or a fingerprint of other frozen factors.
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  try:
    with safe_open(path, framework='numpy') as f:
      meta = json.loads((f.metadata() or {}).get('sve_jax', '{}'))
      flat = {k: f.get_tensor(k) for k in f.keys()}
  except Exception as e:
    raise ckpt.CheckpointError(
        f'cannot read trainables file {path}: {type(e).__name__}: {e}') from e
  trainables = tree_lib.nest({tuple(key.split('/')): value for key, value in flat.items()})
  if frozen is not None:
    ckpt.check_fingerprint(meta, ckpt.factors_fingerprint(frozen), path)
    expected = factorize.member_shapes(frozen)
    got = {'/'.join(p): tuple(v.shape[1:])
           for p, v in tree_lib.flatten_paths(trainables).items()}
    if expected != got:
      bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
      raise ckpt.CheckpointError(
          f'{path}: trainables do not fit this backbone at {bad[:5]}: expected per-member '
          f'shapes {[expected.get(k) for k in bad[:5]]}, file has '
          f'{[got.get(k) for k in bad[:5]]}')
  return trainables, meta
