"""Seeded train / validation / test splits of examples that come as one collection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_SPLIT_FRACTIONS = (('train', 0.8), ('validation', 0.1), ('test', 0.1))


def split_indices(num_examples: int, fractions: Mapping[str, float],
                  seed: int) -> dict[str, np.ndarray]:
  """Partitions `range(num_examples)` into named splits, fixed by `seed`.

  A seeded permutation is cut at `round(cumsum(fractions) * num_examples)`, so
  the splits are disjoint, cover every index, and their sizes differ from
  `fraction * num_examples` by less than one.

  Args:
    num_examples: how many examples to split.
    fractions: `{split name: fraction}`; non-negative, summing to 1.
    seed: seed of the permutation.

  Returns:
    `{split name: sorted int64 indices}` in the order of `fractions`.
  """
  names, values = list(fractions), np.array(list(fractions.values()), float)
  if not names or (values < 0).any() or not np.isclose(values.sum(), 1.0):
    raise ValueError('split fractions must be non-negative and sum to 1, got '
                     f'{dict(fractions)}.')
  order = np.random.default_rng(seed).permutation(num_examples)
  bounds = np.round(np.cumsum(values) * num_examples).astype(int)
  starts = np.concatenate([[0], bounds[:-1]])
  return {name: np.sort(order[a:b]) for name, a, b in zip(names, starts, bounds)}


def plan_splits(sizes: Mapping[str | None, int],
                fractions: Sequence[tuple[str, float]],
                seed: int) -> dict[str, tuple[str | None, np.ndarray]]:
  """Maps each output split to `(input key, row indices of that input)`.

  `sizes` has the single key `None` when one input must be split by `fractions`
  and `seed`, else one key per split whose input is used whole. Empty splits
  are left out (tfds cannot write them).
  """
  if None in sizes:
    parts = split_indices(sizes[None], dict(fractions), seed)
    plan = {split: (None, rows) for split, rows in parts.items()}
  else:
    plan = {split: (split, np.arange(n)) for split, n in sizes.items()}
  return {split: entry for split, entry in plan.items() if len(entry[1])}
