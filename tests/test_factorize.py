"""decompose / compose: every kernel layout, the rules, and clear errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sve_jax
from sve_jax import factorize
from sve_jax import tree


def _rand(shape, seed=0, dtype=np.float32):
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# (name, kernel shape, rule role, independent matrix view W -> (stack..., d_in, d_out))
LAYOUTS = [
    ('dense', 'mlp/Dense_0/kernel', (12, 20), 'decompose', lambda w: w),
    ('attention_qkv', 'attn/query/kernel', (16, 2, 5), 'decompose',
     lambda w: w.reshape(16, 10)),
    ('attention_out', 'attn/out/kernel', (2, 5, 16), 'decompose',
     lambda w: w.reshape(10, 16)),
    ('conv', 'stem/Conv_0/kernel', (3, 3, 4, 7), 'decompose', lambda w: w.reshape(36, 7)),
    ('fused_qkv', 'blocks_0/attn/qkv/kernel', (16, 48), 'decompose', lambda w: w),
    ('stacked', 'layers/mlp/kernel', (3, 12, 20), sve_jax.Decompose(stack_axes=1),
     lambda w: w),
    ('einsum_gemma', 'attn/q_einsum/w', (2, 16, 5),
     sve_jax.Decompose(in_axes=(1,), out_axes=(0, 2)),
     lambda w: w.transpose(1, 0, 2).reshape(16, 10)),
]


@pytest.mark.parametrize('name,path,shape,role,as_matrix', LAYOUTS, ids=[l[0] for l in LAYOUTS])
def test_reconstruction_and_singular_values_per_layout(name, path, shape, role, as_matrix):
  del name
  kernel = _rand(shape)
  params = {}
  tree.nested_set(params, tuple(path.split('/')), jnp.asarray(kernel))
  frozen, s = sve_jax.decompose(params, rules=[(r'.*', role)])
  node = frozen
  for key in path.split('/'):
    node = node[key]
  assert isinstance(node, sve_jax.Factored)
  # Independent value: numpy's SVD of the matrix view written by hand for this layout.
  expected_s = np.linalg.svd(as_matrix(kernel), compute_uv=False)
  got_s = tree.flatten_paths(s)[tuple(path.split('/'))]
  np.testing.assert_allclose(got_s, expected_s, rtol=1e-5, atol=1e-5)
  rebuilt = sve_jax.compose(frozen, s)
  chex.assert_trees_all_equal_shapes_and_dtypes(rebuilt, params)
  chex.assert_trees_all_close(rebuilt, params, atol=1e-5, rtol=1e-5)


def test_bf16_decomposes_in_f32_and_composes_back_to_bf16():
  kernel = jnp.asarray(_rand((16, 24)), jnp.bfloat16)
  frozen, s = sve_jax.decompose({'d': {'kernel': kernel}})
  assert frozen['d']['kernel'].u.dtype == jnp.float32 and s['d']['kernel'].dtype == jnp.float32
  rebuilt = sve_jax.compose(frozen, s)['d']['kernel']
  assert rebuilt.dtype == jnp.bfloat16
  # f32 factors of the bf16 values reproduce them up to one bf16 rounding.
  np.testing.assert_allclose(np.asarray(rebuilt, np.float32), np.asarray(kernel, np.float32),
                             rtol=1e-2, atol=1e-2)


def test_negative_singular_values_are_clamped():
  kernel = jnp.asarray(_rand((6, 6)))
  frozen, s = sve_jax.decompose({'d': {'kernel': kernel}})
  negative = jax.tree_util.tree_map(lambda v: -jnp.abs(v), s)
  np.testing.assert_array_equal(sve_jax.compose(frozen, negative)['d']['kernel'], 0.)


def test_decompose_works_on_nnx_state_pure_dict():
  from flax import nnx
  model = nnx.Sequential(nnx.Linear(5, 7, rngs=nnx.Rngs(0)), nnx.relu,
                         nnx.Linear(7, 3, rngs=nnx.Rngs(1)))
  graphdef, state = nnx.split(model)
  pure = nnx.to_pure_dict(state)
  frozen, s = sve_jax.decompose(pure)
  rebuilt = sve_jax.compose(frozen, s)
  x = jnp.asarray(_rand((2, 5)))
  nnx.replace_by_pure_dict(state, rebuilt)
  np.testing.assert_allclose(nnx.merge(graphdef, state)(x), model(x), atol=1e-5)


def test_decompose_is_traceable_for_parameter_accounting():
  params = {'d': {'kernel': jnp.ones((64, 32)), 'bias': jnp.ones((32,))}}
  frozen, s = jax.eval_shape(sve_jax.decompose, params)
  assert s['d']['kernel'].shape == (32,)
  assert frozen['d']['kernel'].u.shape == (64, 32)


def _with_spectrum(shape, spectrum, seed=0):
  """A batch of matrices with known singular values: random orthonormal U, V (float64)."""
  rng = np.random.default_rng(seed)
  *batch, m, n = shape
  k = min(m, n)
  u = np.linalg.qr(rng.normal(size=(*batch, m, k)))[0]
  v = np.linalg.qr(rng.normal(size=(*batch, n, k)))[0]
  return (u * spectrum) @ np.swapaxes(v, -1, -2)


@pytest.mark.parametrize('shape', [(2, 128, 128), (2, 96, 160), (2, 160, 96), (3, 2, 64, 80),
                                   (96, 64)],
                         ids=['square', 'wide', 'tall', 'stacked', 'one_matrix'])
def test_gram_svd_is_an_svd_even_when_ill_conditioned(shape):
  # Singular values spread over 5.7 decades (MiniLM's kernels reach s_min / s_max ~ 1e-5),
  # just inside gram_svd's range: without the re-orthonormalisation V is off by ~1e-4.
  spectrum = np.logspace(0, -5.7, min(shape[-2:]))
  w = _with_spectrum(shape, spectrum).astype(np.float32)
  u, s, vh = factorize.gram_svd(w)
  reference = np.linalg.svd(w.astype(np.float64), compute_uv=False)
  np.testing.assert_allclose(s, reference, atol=1e-6)
  eye = np.eye(s.shape[-1])
  eye = np.broadcast_to(eye, u.shape[:-2] + eye.shape)
  np.testing.assert_allclose(np.swapaxes(u, -1, -2) @ u, eye, atol=1e-6)
  np.testing.assert_allclose(vh @ np.swapaxes(vh, -1, -2), eye, atol=1e-6)
  np.testing.assert_allclose((u * s[..., None, :]) @ vh, w, atol=1e-6)


def test_rank_deficient_kernels_fall_back_to_lapack_and_still_decompose():
  # Rank 3 of 8: the Gram route declines (it would divide by s = 0) and LAPACK factorises.
  w = (_rand((12, 3), 1) @ _rand((3, 8), 2))
  assert factorize.gram_svd(w) is None
  # Also when it is one matrix of a batch that gram_svd splits over the cores.
  batch = np.stack([_rand((12, 8), i) for i in range(4)] + [w])
  assert factorize.gram_svd(batch) is None
  params = {'Dense_0': {'kernel': jnp.asarray(w)}}
  frozen, s = sve_jax.decompose(params, rules=[(r'.*', 'decompose')])
  np.testing.assert_allclose(s['Dense_0']['kernel'][3:], 0., atol=1e-5)
  chex.assert_trees_all_close(sve_jax.compose(frozen, s), params, atol=1e-5)
  u = frozen['Dense_0']['kernel'].u
  np.testing.assert_allclose(u.T @ u, np.eye(8), atol=1e-5)
