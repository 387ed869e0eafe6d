"""Seeded splits (`sve_jax.data.splits`): a partition fixed by the seed, with the sizes the
fractions ask for."""
import numpy as np
import pytest

from sve_jax.data import splits

from conftest import assert_partition


def test_split_indices_partition_fixed_by_seed():
  fractions = {'train': 0.8, 'validation': 0.1, 'test': 0.1}
  first = splits.split_indices(1001, fractions, seed=0)
  assert {k: len(v) for k, v in first.items()} == {
      'train': 801, 'validation': 100, 'test': 100}
  assert_partition(first.values(), 1001)
  same = splits.split_indices(1001, fractions, seed=0)
  other = splits.split_indices(1001, fractions, seed=1)
  for name in fractions:
    np.testing.assert_array_equal(first[name], same[name])
    assert not np.array_equal(first[name], other[name])
  with pytest.raises(ValueError, match='sum to 1'):
    splits.split_indices(10, {'train': 0.8, 'test': 0.1}, seed=0)


def test_split_sizes_are_within_one_of_the_fractions():
  rng = np.random.default_rng(0)
  for _ in range(200):
    n = int(rng.integers(0, 500))
    weights = rng.random(int(rng.integers(1, 5)))
    fractions = {f's{i}': w for i, w in enumerate(weights / weights.sum())}
    parts = splits.split_indices(n, fractions, seed=int(rng.integers(1000)))
    assert list(parts) == list(fractions)
    assert_partition(parts.values(), n)
    for name, indices in parts.items():
      assert abs(len(indices) - fractions[name] * n) < 1
      assert (np.diff(indices) > 0).all()  # sorted, no repeats


def test_plan_splits_splits_one_input_or_keeps_one_per_split():
  fractions = (('train', 0.5), ('validation', 0.0), ('test', 0.5))
  plan = splits.plan_splits({None: 10}, fractions, seed=3)
  assert list(plan) == ['train', 'test']  # the empty split is left out
  assert all(key is None for key, _ in plan.values())
  assert_partition([rows for _, rows in plan.values()], 10)
  np.testing.assert_array_equal(
      plan['test'][1], splits.split_indices(10, dict(fractions), 3)['test'])
  per_split = splits.plan_splits({'train': 4, 'test': 0, 'extra': 2}, fractions, seed=3)
  assert {split: (key, rows.tolist()) for split, (key, rows) in per_split.items()} == {
      'train': ('train', [0, 1, 2, 3]), 'extra': ('extra', [0, 1])}
