"""Full fine-tuning: every weight trains, statistics stay frozen, its member runs the backbone with its head."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sve_jax import layout
from sve_jax import methods
from sve_jax import models
from sve_jax import tree


class DenseWithStatistic(nn.Module):
  """Dense → scaled by a stored statistic → head, with the backbones' ``train`` keyword."""

  @nn.compact
  def __call__(self, x, *, train=False):
    scale = self.param('norm_stat', nn.initializers.ones, (16,))
    return nn.Dense(3, name='head')(nn.relu(nn.Dense(16, name='dense')(x)) * scale)


def test_every_weight_but_the_statistics_trains_and_the_member_is_the_backbone_with_its_head():
  model = DenseWithStatistic()
  inputs = jax.random.normal(jax.random.key(0), (4, 5))
  params = model.init(jax.random.key(1), inputs)['params']
  params = {**params, 'norm_stat': jnp.linspace(0.5, 1.5, 16)}
  backbone = models.Backbone('tiny', model, params, layout.DEFAULT_RULES, 'image',
                             statistics=(r'^norm_stat$',))
  setup = methods.build('single_ft', backbone, {'num_members': 4}, jax.random.key(2))
  assert set(tree.flatten_paths(setup.frozen)) == {('norm_stat',)}
  assert set(tree.flatten_paths(setup.trainables)) == set(tree.flatten_paths(params)) - {
      ('norm_stat',)}
  assert setup.trainable_per_member == tree.num_params(params) - 16
  logits = setup.forward(setup.frozen, setup.trainables, inputs, jax.random.key(3), False)
  head_0 = jax.tree_util.tree_map(lambda x: x[0], setup.trainables['head'])
  expected = model.apply({'params': {**params, 'head': head_0}}, inputs)
  assert logits.shape == (1,) + expected.shape  # one model, whatever num_members says
  assert float(jnp.abs(expected).max()) > 0  # the fresh head is not zero
  np.testing.assert_allclose(logits[0], expected, atol=1e-6)
