"""MC dropout: one fine-tuned model, M dropout samples at evaluation."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train
from sve_jax import layout
from sve_jax import methods
from sve_jax import models
from sve_jax.train import steps


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


def _eval_logits(setup, trainables, images):
  """The jitted evaluation forward ``(M, B, C)``."""
  forward = jax.jit(functools.partial(setup.forward, train=False))
  return forward(setup.frozen, trainables, images, jax.random.key(0))



def _member(tree, m):
  return jax.tree_util.tree_map(lambda x: x[m], tree)


def test_mc_dropout_samples_differ_and_are_reproducible(tiny):
  backbone, images, _ = tiny
  setup = methods.build('mc_dropout', backbone, _config(num_members=4), jax.random.key(2))
  eval_fn = jax.jit(steps.make_eval_step(setup.forward))
  a = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(7)))
  again = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(7)))
  other = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(8)))
  assert a.shape == (4, B, C)
  np.testing.assert_array_equal(a, again)
  assert not np.allclose(a, other)
  assert all(not np.allclose(a[i], a[j]) for i in range(4) for j in range(i))
  # Every sample is the trained model with dropout on: its mean is near the deterministic one.
  deterministic = jax.jit(backbone.apply)(_member(setup.trainables, 0), images)
  assert np.abs(a.mean(0) - deterministic).max() < np.abs(a - deterministic).max()


def test_mc_dropout_without_dropout_names_the_config_key(tiny):
  with pytest.raises(ValueError, match='config.model.dropout_rate'):
    methods.build('mc_dropout', _backbone(dropout_rate=0.), _config(), jax.random.key(0))


def test_config_dropout_rate_reaches_the_bert_backbone(tiny_bert_folder):
  model = {'name': 'bert', 'path': tiny_bert_folder, 'pooling': '', 'max_length': 8,
           'dropout_rate': 0.}
  backbone = models.load_backbone(model, num_classes=2)
  assert backbone.dropout_rate == 0.
  assert backbone.module.dropout_rate == backbone.module.attention_dropout_rate == 0.
  with pytest.raises(ValueError, match='config.model.dropout_rate'):
    methods.build('mc_dropout', backbone, _config(), jax.random.key(0))
  own = models.load_backbone({**model, 'dropout_rate': -1.}, num_classes=2)
  assert own.dropout_rate == 0.1  # transformers' BertConfig default, saved in config.json
  with pytest.raises(ValueError, match=r'config.model.dropout_rate=1.5 must be'):
    models.validate_model_config({**model, 'dropout_rate': 1.5})
