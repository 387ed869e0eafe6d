"""Shared fixtures: a tiny linen model with Dense, attention and Conv layers."""
import os
import sys

import flax.linen as nn
import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


class TinyNet(nn.Module):
  """Conv → LayerNorm → self-attention → Dense → head: every default layout once."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.LayerNorm()(x)
    tokens = x.reshape(x.shape[0], -1, x.shape[-1])
    tokens = tokens + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(tokens)
    h = nn.relu(nn.Dense(16)(tokens.mean(axis=1)))
    return nn.Dense(self.num_classes, name='head')(h)


@pytest.fixture(scope='session')
def tiny():
  """``(model, params, images)`` of :class:`TinyNet`."""
  model = TinyNet()
  images = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))
  params = model.init(jax.random.key(1), images)['params']
  return model, params, images
