"""Rules and layouts: which leaves SVE decomposes, trains per member or freezes."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sve_jax
from sve_jax import factorize
from sve_jax import layout
from sve_jax import tree


def _rand(shape, seed=0, dtype=np.float32):
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def test_default_rules_roles(tiny):
  _, params, _ = tiny
  frozen, s = sve_jax.decompose(params)
  roles = {}
  for kp, node in jax.tree_util.tree_flatten_with_path(frozen, is_leaf=factorize.is_sve_node)[0]:
    path = '/'.join(tree.keypath_to_path(kp))
    roles[path] = type(node).__name__
  assert roles['Conv_0/kernel'] == 'Factored'
  assert roles['MultiHeadDotProductAttention_0/out/kernel'] == 'Factored'
  assert roles['Dense_0/kernel'] == 'Factored'
  assert roles['head/kernel'] == 'MemberSlot' and roles['head/bias'] == 'MemberSlot'
  assert roles['Dense_0/bias'] == 'MemberSlot'
  assert roles['LayerNorm_0/scale'] == 'ArrayImpl' and roles['LayerNorm_0/bias'] == 'ArrayImpl'
  # Only arrays as leaves, so the trees go through jit unchanged.
  assert all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(frozen))
  out = jax.jit(sve_jax.compose)(frozen, s)
  chex.assert_trees_all_close(out, params, atol=1e-5)


def test_select_finds_the_kernels_and_member_leaves_that_decompose_uses(tiny):
  _, params, _ = tiny
  frozen, s = sve_jax.decompose(params)
  kernels, members = layout.select(params, None)
  assert {'/'.join(p): lay for p, lay in kernels.items()} == factorize.layouts(frozen)
  assert set(kernels) | set(members) == set(tree.flatten_paths(s))
  assert not set(kernels) & set(members)
  with pytest.raises(sve_jax.LayoutError, match=r'd/bias: matched as a kernel .* \(5,\)'):
    layout.select({'d': {'bias': jnp.ones((5,))}}, [(r'.*', 'decompose')])


def test_predicate_rules_and_first_match_wins():
  params = {'a': {'kernel': jnp.asarray(_rand((4, 6)))}, 'b': {'kernel': jnp.asarray(_rand((4, 6)))}}
  frozen, s = sve_jax.decompose(params, rules=[(r'^a/', 'frozen'), (r'kernel', 'decompose')])
  assert isinstance(frozen['a']['kernel'], jax.Array) and 'a' not in s
  assert isinstance(frozen['b']['kernel'], sve_jax.Factored)
  frozen2, _ = sve_jax.decompose(params, rules=lambda path, leaf: 'decompose' if path.startswith('a') else 'frozen')
  assert isinstance(frozen2['a']['kernel'], sve_jax.Factored)


@pytest.mark.parametrize('params,rule,message', [
    ({'d': {'bias': jnp.ones((5,))}}, 'decompose', r"d/bias: matched as a kernel .* shape \(5,\)"),
    ({'d': {'kernel': jnp.ones((4, 5))}}, sve_jax.Decompose(in_axes=(0,), out_axes=(0,)),
     r"d/kernel: shape \(4, 5\) does not fit the layout"),
    ({'d': {'kernel': jnp.ones((4, 5))}}, sve_jax.Decompose(in_axes=(0,)),
     r'd/kernel: give both in_axes and out_axes'),
    ({'d': {'kernel': jnp.ones((2, 2, 2, 2, 2))}}, 'decompose',
     r"d/kernel: shape \(2, 2, 2, 2, 2\) .* matrix rank 5"),
    ({'d': {'kernel': jnp.ones((4, 5)).at[1, 2].set(jnp.nan)}}, 'decompose',
     r'd/kernel: weight of shape \(4, 5\) holds 1 NaN/inf'),
    ({'d': {'kernel': jnp.ones((4, 5))}}, 'trainable', r"d/kernel: unknown role 'trainable'"),
])
def test_bad_leaves_raise_naming_path_shape_and_layout(params, rule, message):
  with pytest.raises(ValueError, match=message):
    sve_jax.decompose(params, rules=[(r'.*', rule)])
