"""Params trees addressed by '/'-paths, and counting their entries.

A path is the tuple of a leaf's dict keys, e.g. ``('encoder', 'layer_0', 'query', 'kernel')``;
joined by '/' it is what SVE rules match. Every module that walks a params tree by path, or
counts parameters, uses these functions.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np

PyTree = Any
Path = tuple[str, ...]


def _key_name(entry: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def keypath_to_path(keypath: Sequence[Any]) -> Path:
  """Converts a jax key path into a tuple of strings."""
  return tuple(_key_name(k) for k in keypath)


def flatten_paths(tree: PyTree) -> dict[Path, Any]:
  """``{path: leaf}`` of a nested dict of arrays, in the tree's leaf order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {keypath_to_path(kp): leaf for kp, leaf in flat}


def nested_set(tree: dict, path: Path, value: Any) -> None:
  """Sets ``tree[path[0]][path[1]]... = value`` in place, creating the dicts on the way."""
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def nest(values: Mapping[Path, Any]) -> dict:
  """``{path: value}`` as a nested dict keyed by the path components."""
  tree: dict = {}
  for path, value in values.items():
    nested_set(tree, path, value)
  return tree


def replace_leaves(params: PyTree, values: Mapping[Path, Any]) -> PyTree:
  """``params`` with the leaf at each path of ``values`` replaced by its value.

  Raises:
    KeyError: a path of ``values`` is not a leaf of ``params``.
  """
  unknown = sorted('/'.join(p) for p in set(values) - set(flatten_paths(params)))
  if unknown:
    raise KeyError(f'no such params leaves: {unknown[:5]}')
  return jax.tree_util.tree_map_with_path(
      lambda kp, leaf: values.get(keypath_to_path(kp), leaf), params)


def num_params(tree: PyTree) -> int:
  """Number of entries of all leaves: arrays, ``jax.ShapeDtypeStruct`` s or scalars."""
  return sum(math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(tree))
