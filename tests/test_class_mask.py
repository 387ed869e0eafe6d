"""Absent classes' logits: masked in Backbone.apply for every backbone and method."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax import class_mask
from sve_jax.models import Backbone


def test_mask_logits_sets_absent_classes_to_the_absent_logit():
  logits = jnp.asarray([[1., 2., 3.], [4., 5., 6.]])
  mask = np.asarray([[True, True, False], [True, True, True]])
  out = class_mask.mask_logits(logits, mask)
  np.testing.assert_array_equal(out, [[1., 2., -1e9], [4., 5., 6.]])
  probs = np.asarray(jnp.exp(out - jnp.max(out, -1, keepdims=True)))
  assert probs[0, 2] == 0.  # exactly zero probability, no NaN
  assert class_mask.mask_logits(logits, None) is logits
  with pytest.raises(ValueError, match='2 classes but the model gives 3 logits'):
    class_mask.mask_logits(logits, mask[:, :2])


class _Sum(nn.Module):
  """Fails on any input key but `x`: the module must never see the mask."""

  @nn.compact
  def __call__(self, inputs, train=False):
    (key,) = inputs
    return nn.Dense(3)(inputs[key])


def test_backbone_apply_hides_the_mask_from_the_module_and_applies_it():
  module = _Sum()
  x = jnp.ones((2, 4))
  params = module.init(jax.random.key(0), {'x': x})['params']
  backbone = Backbone('t', module, params, (), 'text')
  plain = backbone.apply(params, {'x': x})
  masked = backbone.apply(params, {'x': x, 'class_mask': np.asarray([[1, 0, 1], [1, 1, 1]])})
  np.testing.assert_array_equal(masked[1], plain[1])
  assert masked[0, 1] == -1e9 and masked[0, 0] == plain[0, 0]
