"""The adapter scaffold: factors that leave a kernel unchanged give the backbone's logits."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sve_jax import layout
from sve_jax import models
from sve_jax.methods import adapters


class TwoDense(nn.Module):
  """Dense → head, with the ``train`` keyword the backbones take."""

  @nn.compact
  def __call__(self, x, *, train=False):
    return nn.Dense(3, name='head')(nn.relu(nn.Dense(16, name='dense')(x)))


def test_members_with_neutral_factors_and_zero_heads_are_the_backbone():
  model = TwoDense()
  images = jax.random.normal(jax.random.key(0), (4, 5))
  params = model.init(jax.random.key(1), images)['params']
  backbone = models.Backbone('tiny', model, params, layout.DEFAULT_RULES, 'image')
  kernels, _ = layout.select(params, backbone.rules)
  num_members = 3

  def init_factors(key):
    del key
    first = {p: jnp.ones((num_members,) + lay.stack_shape + (lay.d_in,))
             for p, lay in kernels.items()}
    second = {p: jnp.ones((num_members,) + lay.stack_shape + (lay.d_out,))
              for p, lay in kernels.items()}
    return first, second

  adapter = adapters.KernelAdapter(
      factor_keys=('r', 's'), init_factors=init_factors,
      adapt=lambda w, r, s: w * r[..., :, None] * s[..., None, :])
  setup = adapters.build_adapted('tiny_adapter', backbone, kernels, adapter, jax.random.key(0),
                                 num_members)
  assert set(setup.trainables) == {'r', 's', 'head'}
  assert setup.trainable_per_member == sum(
      lay.d_in + lay.d_out for lay in kernels.values()) + 16 * 3 + 3
  zero_heads = jax.tree_util.tree_map(jnp.zeros_like, setup.trainables['head'])
  neutral = {**setup.trainables, 'head': zero_heads}
  logits = setup.forward(setup.frozen, neutral, images, jax.random.key(1), False)
  backbone_params = {**params, 'head': jax.tree_util.tree_map(jnp.zeros_like, params['head'])}
  expected = model.apply({'params': backbone_params}, images)
  assert logits.shape == (num_members,) + expected.shape
  for m in range(num_members):
    np.testing.assert_allclose(logits[m], expected, atol=1e-5)
