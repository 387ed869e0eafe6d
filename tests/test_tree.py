"""Params trees by '/'-path: flattening and nesting are inverses, counts add up."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax import tree


def _random_tree(rng, depth=0):
  """A nested dict of arrays with random keys, shapes and depth."""
  node = {}
  for i in range(rng.integers(1, 4)):
    key = f'k{i}_{rng.integers(100)}'
    if depth < 3 and rng.random() < 0.4:
      node[key] = _random_tree(rng, depth + 1)
    else:
      shape = tuple(int(d) for d in rng.integers(1, 4, size=rng.integers(0, 3)))
      node[key] = np.asarray(rng.normal(size=shape), np.float32)
  return node


@pytest.mark.parametrize('seed', range(20))
def test_nest_inverts_flatten_paths_and_num_params_counts_every_entry(seed):
  params = _random_tree(np.random.default_rng(seed))
  flat = tree.flatten_paths(params)
  assert list(flat) == [tree.keypath_to_path(kp) for kp, _ in
                        jax.tree_util.tree_flatten_with_path(params)[0]]
  jax.tree_util.tree_map(np.testing.assert_array_equal, tree.nest(flat), params)
  assert tree.num_params(params) == sum(np.size(v) for v in flat.values())
  assert tree.num_params(jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)) == tree.num_params(params)


@pytest.mark.parametrize('seed', range(10))
def test_replace_leaves_changes_exactly_the_given_paths(seed):
  rng = np.random.default_rng(seed)
  params = _random_tree(rng)
  flat = tree.flatten_paths(params)
  chosen = [p for p in flat if rng.random() < 0.5]
  replaced = tree.flatten_paths(tree.replace_leaves(
      params, {p: jnp.full_like(flat[p], 7.) for p in chosen}))
  assert list(replaced) == list(flat)
  for path, value in replaced.items():
    expected = np.full_like(flat[path], 7.) if path in chosen else flat[path]
    np.testing.assert_array_equal(value, expected)


def test_replace_leaves_refuses_an_unknown_path():
  with pytest.raises(KeyError, match='no such params leaves'):
    tree.replace_leaves({'a': {'kernel': np.ones(2)}}, {('a', 'bias'): np.zeros(2)})
