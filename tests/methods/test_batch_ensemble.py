"""BatchEnsemble: rank-1 multiplicative fast weights per member."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train
from sve_jax import layout
from sve_jax import methods
from sve_jax import tree
from sve_jax import models


M, B, C = 3, 4, 3
TINY_ATTENTION_RULES = ((r'(^|/)attention/(query|key|value|out)/kernel$', 'decompose'),
                        (r'(^|/)head/(kernel|bias)$', 'member'))


class TinyDropNet(nn.Module):
  """Conv → LayerNorm → self-attention → Dense → dropout → zero head, like the backbones."""
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, x, *, train=False):
    x = nn.LayerNorm()(nn.Conv(8, (3, 3), name='conv')(x))
    tokens = x.reshape(x.shape[0], -1, x.shape[-1])
    tokens = tokens + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8,
                                                      name='attention')(tokens)
    h = nn.relu(nn.Dense(16, name='dense')(tokens.mean(axis=1)))
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return nn.Dense(C, kernel_init=nn.initializers.zeros, name='head')(h)


def _backbone(dropout_rate=0.1):
  module = TinyDropNet(dropout_rate)
  images = jax.random.normal(jax.random.key(0), (B, 6, 6, 3))
  params = module.init(jax.random.key(1), images)['params']
  return models.Backbone('tiny', module, params, layout.DEFAULT_RULES, 'image',
                         attention_rules=TINY_ATTENTION_RULES, dropout_rate=dropout_rate)


@pytest.fixture(scope='module')
def tiny():
  images = jax.random.normal(jax.random.key(0), (B, 6, 6, 3))
  labels = jnp.array([0, 1, 2, 1])
  return _backbone(), images, labels


def _config(**changes):
  return {'num_members': M, 'noise_std': 0.01, 'execution': 'compose', 'lora_rank': 2,
          **changes}


@pytest.fixture(scope='module')
def built(tiny):
  """``built(method)``: the method on the tiny backbone with :func:`_config`, built once."""
  cache = {}

  def get(method):
    if method not in cache:
      cache[method] = methods.build(method, tiny[0], _config(), jax.random.key(2))
    return cache[method]

  return get


def _with_head(params, head):
  return {**params, 'head': head}


def _member(tree, m):
  return jax.tree_util.tree_map(lambda x: x[m], tree)


def _eval_logits(setup, trainables, images):
  """The jitted evaluation forward ``(M, B, C)``."""
  forward = jax.jit(functools.partial(setup.forward, train=False))
  return forward(setup.frozen, trainables, images, jax.random.key(0))


def test_batch_ensemble_starts_from_unit_fast_weights_copied_biases_and_fresh_heads(tiny):
  backbone, _, _ = tiny
  setup = methods.build('batch_ensemble', backbone, _config(noise_std=0.), jax.random.key(2))
  fast = jax.tree_util.tree_leaves({k: setup.trainables[k] for k in ('fast_r', 'fast_s')})
  assert all(np.all(np.asarray(x) == 1.) for x in fast)
  per_member = setup.trainables['params']
  assert set(per_member) == {'conv', 'attention', 'dense', 'head'}
  for m in range(M):
    member = _member({k: v for k, v in per_member.items() if k != 'head'}, m)
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
  logits = _eval_logits(setup, trainables, images)
  apply = jax.jit(backbone.apply)

  def params_with(m, kernels):
    params = jax.tree_util.tree_map(lambda x: x, backbone.params)
    for path, value in {**tree.flatten_paths(_member(trainables['params'], m)),
                        **kernels}.items():
      tree.nested_set(params, path, value)
    return params

  np.testing.assert_allclose(logits[0], apply(params_with(0, {}), images), rtol=1e-5,
                             atol=1e-6)
  t1 = _member(trainables, 1)
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
