"""What every backbone loader returns (`sve_jax.models.backbone`)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sve_jax.models.backbone import Backbone
from sve_jax.models.backbone import HEAD_INIT
from sve_jax.models.backbone import dropout_override
from sve_jax.models.backbone import square_image_size


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dropout(0.5, deterministic=not train)(nn.Dense(8)(x))
    return nn.Dense(2, kernel_init=HEAD_INIT, name='head')(x)


def test_dropout_override_and_image_size():
  assert dropout_override({}) is None and dropout_override({'dropout_rate': -1.}) is None
  assert dropout_override({'dropout_rate': 0}) == 0. and dropout_override({'dropout_rate': .2}) == .2
  assert square_image_size({'image_size': 96}) == (96, 96)


def test_apply_is_the_modules_forward_with_train_and_rngs():
  module = Tiny()
  x = jnp.ones((3, 4))
  params = module.init(jax.random.key(0), x)['params']
  backbone = Backbone('tiny', module, params, rules=(), modality='text')
  np.testing.assert_array_equal(backbone.apply(params, x), np.zeros((3, 2)))  # head at zero
  params = {**params, 'head': {'kernel': jnp.ones((8, 2)), 'bias': jnp.zeros(2)}}
  evaluated = backbone.apply(params, x)
  np.testing.assert_allclose(evaluated, module.apply({'params': params}, x), rtol=1e-6)
  trained = [backbone.apply(params, x, train=True, rngs={'dropout': jax.random.key(k)})
             for k in (1, 2)]
  assert not np.allclose(trained[0], trained[1])  # dropout masks follow the key
