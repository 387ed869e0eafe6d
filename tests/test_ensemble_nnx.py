"""SVE on a flax.nnx model, as the README shows it, against the same model written in linen."""
import flax.linen as nn
from flax import nnx
import jax
import numpy as np
import optax
import pytest

import sve_jax
from sve_jax.methods import sve as sve_method
from sve_jax.train import steps
from sve_jax.train import state as train_state


class NnxClassifier(nnx.Module):
  """Linear → LayerNorm → ReLU → Linear head."""

  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(6, 8, rngs=rngs)
    self.norm = nnx.LayerNorm(8, rngs=rngs)
    self.head = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.head(nnx.relu(self.norm(self.hidden(x))))


class LinenClassifier(nn.Module):
  """The same network in linen, with the same parameter names."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.LayerNorm(name='norm')(nn.Dense(8, name='hidden')(x)))
    return nn.Dense(3, name='head')(x)


def nnx_pure_apply(model: nnx.Module):
  """The README's recipe: ``(params, apply)`` of an nnx model, ``params`` a plain dict."""
  graphdef, state = nnx.split(model)

  def apply(params, x):
    filled = jax.tree.map(lambda leaf: leaf, state)  # replace_by_pure_dict writes in place.
    nnx.replace_by_pure_dict(filled, params)
    return nnx.merge(graphdef, filled)(x)

  return nnx.to_pure_dict(state), apply


def sve_train_step(params, apply, batch, noise_std):
  """Decomposes, initialises 3 members, runs one train step; member logits before and after."""
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(1), frozen, s, 3, noise_std=noise_std)
  sve_apply = sve_jax.make_sve_apply(apply)
  step = jax.jit(steps.make_train_step(sve_method.make_forward(sve_apply), optax.adam(1e-2)))
  state = train_state.create_train_state(trainables, optax.adam(1e-2), jax.random.key(2))
  member_logits = jax.jit(lambda t: sve_apply({'frozen': frozen, 'trainables': t},
                                               batch['inputs']))
  before = member_logits(state.trainables)
  state, metrics = step(state, frozen, batch)
  after = member_logits(state.trainables)
  return np.asarray(before), np.asarray(after), float(metrics['loss'])


@pytest.mark.slow  # over 5 s on 2 cores
def test_sve_on_an_nnx_model_matches_its_linen_twin_and_trains():
  model = NnxClassifier(nnx.Rngs(0))
  params, apply = nnx_pure_apply(model)
  x = np.asarray(jax.random.normal(jax.random.key(3), (10, 6)))
  batch = {'inputs': x, 'label': np.arange(10) % 3}

  # With no noise, every member is the pretrained nnx model itself.
  exact, _, _ = sve_train_step(params, apply, batch, noise_std=0.)
  for member in exact:
    np.testing.assert_allclose(member, np.asarray(model(x)), atol=1e-5)

  linen = LinenClassifier()
  linen_apply = lambda p, inputs: linen.apply({'params': p}, inputs)
  assert jax.tree.structure(params) == jax.tree.structure(
      linen.init(jax.random.key(0), x)['params'])
  nnx_before, nnx_after, nnx_loss = sve_train_step(params, apply, batch, noise_std=0.1)
  linen_before, linen_after, linen_loss = sve_train_step(params, linen_apply, batch,
                                                         noise_std=0.1)
  np.testing.assert_allclose(nnx_before, linen_before, atol=1e-5)
  np.testing.assert_allclose(nnx_after, linen_after, atol=1e-5)
  assert abs(nnx_loss - linen_loss) < 1e-5
  assert not np.allclose(nnx_before[0], nnx_before[1])  # members differ
  assert not np.allclose(nnx_before, nnx_after)         # the step changed them
  loss_after = optax.softmax_cross_entropy_with_integer_labels(
      nnx_after, np.broadcast_to(batch['label'], nnx_after.shape[:2])).mean()
  assert loss_after < nnx_loss                           # and lowered the batch's loss
