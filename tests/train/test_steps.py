"""Training touches the trainables only; the loss is the mean of the members' losses."""
import jax
import pytest
import jax.numpy as jnp
import numpy as np
import optax

import sve_jax
from sve_jax import tree
from sve_jax.methods import sve as sve_method
from sve_jax.train import steps
from sve_jax.train import state as train_state


def _setup(tiny, num_members=3):
  model, params, images = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, num_members)
  forward = sve_method.make_forward(
      sve_jax.make_sve_apply(lambda p, x: model.apply({'params': p}, x)))
  batch = {'inputs': images, 'label': jnp.array([0, 1, 2, 1])}
  return model, frozen, trainables, forward, batch


def test_loss_is_mean_of_member_cross_entropies(tiny):
  _, frozen, trainables, forward, batch = _setup(tiny)
  loss, _ = steps.ensemble_loss(forward)(trainables, frozen, batch, jax.random.key(0))
  logits = np.asarray(forward(frozen, trainables, batch['inputs'], None, False), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  labels = np.asarray(batch['label'])
  expected = np.mean([-logp[m, np.arange(4), labels].mean() for m in range(3)])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_only_trainables_change_and_optimizer_state_matches_them(tiny):
  _, frozen, trainables, forward, batch = _setup(tiny)
  frozen_before = jax.tree_util.tree_map(np.array, frozen)
  trainables_before = jax.tree_util.tree_map(np.array, trainables)
  optimizer = train_state.make_optimizer(1e-2, total_steps=5, warmup_steps=1)
  state = train_state.create_train_state(trainables, optimizer, jax.random.key(1))
  step = jax.jit(steps.make_train_step(forward, optimizer))
  for _ in range(5):
    state, metrics = step(state, frozen, batch)
  assert int(state.step) == 5 and np.isfinite(float(metrics['loss']))
  # Frozen U, Vᵀ and shared leaves: bitwise unchanged.
  jax.tree_util.tree_map(np.testing.assert_array_equal, frozen, frozen_before)
  # Every singular-value vector and per-member leaf moved.
  for path, after in tree.flatten_paths(state.trainables).items():
    before = tree.flatten_paths(trainables_before)[path]
    assert not np.allclose(after, before), path
  # Optimiser state: AdamW's two moments of exactly the trainables, plus scalar counts.
  moments = [x for x in jax.tree_util.tree_leaves(state.opt_state) if np.ndim(x) >= 1]
  assert sum(x.size for x in moments) == 2 * tree.num_params(trainables)


@pytest.mark.slow
def test_grads_flow_to_every_member_independently(tiny):
  _, frozen, trainables, forward, batch = _setup(tiny, num_members=2)

  def member0_loss(t):
    logits = forward(frozen, t, batch['inputs'], None, False)
    return optax.softmax_cross_entropy_with_integer_labels(logits[0], batch['label']).mean()

  grads = jax.grad(member0_loss)(trainables)
  for leaf in jax.tree_util.tree_leaves(grads):
    assert float(jnp.abs(leaf[0]).max()) > 0
    np.testing.assert_array_equal(leaf[1], 0.)  # member 1 does not feel member 0's loss


