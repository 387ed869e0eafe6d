"""The tiny backbone the method tests share, its fixtures and small helpers.

A linen model with a Conv, a LayerNorm, Flax attention (DenseGeneral kernels), a Dense,
dropout and a zero head: every kind of leaf the methods treat differently, in milliseconds.
Test modules import the fixtures by name (``from tiny_methods import built, tiny``).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from sve_jax import layout
from sve_jax import methods
from sve_jax import models
from sve_jax.models.backbone import sow_features

M, B, C = 3, 4, 3  # members, batch, classes
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
    sow_features(self, h)  # the pooled features the head reads
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return nn.Dense(C, kernel_init=nn.initializers.zeros, name='head')(h)


def tiny_backbone(dropout_rate=0.1):
  """A :class:`models.Backbone` of :class:`TinyDropNet` with its initial parameters."""
  module = TinyDropNet(dropout_rate)
  images = jax.random.normal(jax.random.key(0), (B, 6, 6, 3))
  params = module.init(jax.random.key(1), images)['params']
  return models.Backbone('tiny', module, params, layout.DEFAULT_RULES, 'image',
                         attention_rules=TINY_ATTENTION_RULES, dropout_rate=dropout_rate)


def method_config(**changes):
  """The method options the tests build with: M members, small noise, composed execution."""
  return {'num_members': M, 'noise_std': 0.01, 'execution': 'compose', 'lora_rank': 2,
          **changes}


@pytest.fixture(scope='module')
def tiny():
  """``(backbone, images (B, 6, 6, 3), labels (B,))``."""
  images = jax.random.normal(jax.random.key(0), (B, 6, 6, 3))
  labels = jnp.array([0, 1, 2, 1])
  return tiny_backbone(), images, labels


@pytest.fixture(scope='module')
def built(tiny):  # pylint: disable=redefined-outer-name
  """``built(method)``: the method on the tiny backbone with :func:`method_config`, built
  once per module."""
  cache = {}

  def get(method):
    if method not in cache:
      cache[method] = methods.build(method, tiny[0], method_config(), jax.random.key(2))
    return cache[method]

  return get


def eval_logits(setup, trainables, images):
  """The jitted evaluation forward ``(M, B, C)``."""
  forward = jax.jit(functools.partial(setup.forward, train=False))
  return forward(setup.frozen, trainables, images, jax.random.key(0))


def with_head(params, head):
  return {**params, 'head': head}


def member_of(tree, m):
  """Member ``m`` of a member-stacked tree."""
  return jax.tree_util.tree_map(lambda x: x[m], tree)
