"""BatchEnsemble: rank-1 multiplicative fast weights per member."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax import methods
from sve_jax import tree
# pytest finds the fixtures tiny and built by these names.
from tiny_methods import M, built, eval_logits, member_of, method_config, tiny


def test_batch_ensemble_starts_from_unit_fast_weights_copied_biases_and_fresh_heads(tiny):
  backbone, _, _ = tiny
  setup = methods.build('batch_ensemble', backbone, method_config(noise_std=0.), jax.random.key(2))
  fast = jax.tree_util.tree_leaves({k: setup.trainables[k] for k in ('fast_r', 'fast_s')})
  assert all(np.all(np.asarray(x) == 1.) for x in fast)
  per_member = setup.trainables['params']
  assert set(per_member) == {'conv', 'attention', 'dense', 'head'}
  for m in range(M):
    member = member_of({k: v for k, v in per_member.items() if k != 'head'}, m)
    jax.tree_util.tree_map(np.testing.assert_array_equal, member,
                           {k: {n: {'bias': backbone.params[k][n]['bias']} for n in v}
                            if k == 'attention' else {'bias': backbone.params[k]['bias']}
                            for k, v in member.items()})
  kernels = np.asarray(per_member['head']['kernel'])
  assert all(not np.allclose(kernels[i], kernels[j]) for i in range(M) for j in range(i))
  # Per member: r and s of the conv (27 + 8), dense (8 + 16) and 4 attention kernels
  # (4 · (8 + 8)); the biases of those layers (8 + 16 + 3 · 8 + 8); the head (16 · 3 + 3).
  assert setup.trainable_per_member == 35 + 24 + 64 + 56 + 51


@pytest.mark.slow
def test_batch_ensemble_scales_w_elementwise_by_r_s_transposed(tiny, built):
  backbone, images, _ = tiny
  setup = built('batch_ensemble')
  # Member 0: r = s = 1 (must be the backbone with its own biases and head); member 1:
  # visibly non-unit r, s checked against numpy; member 2 as initialised.
  draw = lambda x, k: jnp.ones_like(x).at[1].set(
      jax.random.uniform(jax.random.key(k), x.shape[1:], minval=0.5, maxval=1.5))
  trainables = jax.tree_util.tree_map(lambda x: x, setup.trainables)
  for i, name in enumerate(('fast_r', 'fast_s')):
    trainables[name] = jax.tree_util.tree_map(lambda x, i=i: draw(x, i), trainables[name])
  logits = eval_logits(setup, trainables, images)
  apply = jax.jit(backbone.apply)

  def params_with(m, kernels):
    params = jax.tree_util.tree_map(lambda x: x, backbone.params)
    for path, value in {**tree.flatten_paths(member_of(trainables['params'], m)),
                        **kernels}.items():
      tree.nested_set(params, path, value)
    return params

  np.testing.assert_allclose(logits[0], apply(params_with(0, {}), images), rtol=1e-5,
                             atol=1e-6)
  t1 = member_of(trainables, 1)
  r = {k: np.asarray(v) for k, v in tree.flatten_paths(t1['fast_r']).items()}
  s = {k: np.asarray(v) for k, v in tree.flatten_paths(t1['fast_s']).items()}
  w = {k: np.asarray(v) for k, v in tree.flatten_paths(backbone.params).items()}
  dense, conv = ('dense', 'kernel'), ('conv', 'kernel')
  assert r[dense].shape == (8,) and s[dense].shape == (16,)
  kernels = {dense: w[dense] * np.outer(r[dense], s[dense]),  # (in, out) ⊙ r sᵀ
             conv: w[conv] * r[conv].reshape(3, 3, 3, 1) * s[conv]}  # rows: (kh, kw, c_in)
  for name in ('query', 'key', 'value', 'out'):
    # (embed, heads, head_dim) and (heads, head_dim, embed): input axes lead, 8 × 8 matrices.
    path = ('attention', name, 'kernel')
    kernels[path] = (w[path].reshape(8, 8) * np.outer(r[path], s[path])).reshape(w[path].shape)
  np.testing.assert_allclose(logits[1], apply(params_with(1, kernels), images), rtol=1e-4,
                             atol=1e-5)
