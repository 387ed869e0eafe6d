"""Deep ensemble: M full copies of the backbone, each with its own head."""
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


def test_deep_ensemble_members_share_the_backbone_but_not_the_head(tiny, built):
  backbone, _, _ = tiny
  setup = built('deep_ensemble')
  assert setup.frozen == {} and setup.trainable_per_member == tree.num_params(backbone.params)
  for m in range(M):
    member = _member(setup.trainables, m)
    jax.tree_util.tree_map(np.testing.assert_array_equal,
                           {k: v for k, v in member.items() if k != 'head'},
                           {k: v for k, v in backbone.params.items() if k != 'head'})
    np.testing.assert_array_equal(member['head']['bias'], 0.)
  kernels = np.asarray(setup.trainables['head']['kernel'])
  assert np.all(kernels != 0) and np.abs(kernels).max() < 0.06  # N(0, 0.01²), 48 draws/member
  assert all(not np.allclose(kernels[i], kernels[j]) for i in range(M) for j in range(i))
  # Member m's head comes from its own key: the same whatever M is.
  fewer = methods.build('deep_ensemble', backbone, _config(num_members=2), jax.random.key(2))
  np.testing.assert_array_equal(fewer.trainables['head']['kernel'], kernels[:2])
