"""Laplace-LoRA: one LoRA trained as lora_ensemble's, a diagonal Laplace posterior over its
weights after training, M draws as members."""
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax import methods
from sve_jax import tree
from sve_jax.methods import base
from sve_jax.methods import laplace_lora
# pytest finds the fixtures tiny and built by these names.
from tiny_methods import B, C, M, built, eval_logits, method_config, tiny


def _trained(setup):
  """The setup's trainables with every B drawn non-zero, as after some training (at B = 0
  the gradient of A vanishes)."""
  b = setup.trainables['lora_b']
  leaves, treedef = jax.tree_util.tree_flatten(b)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  drawn = [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
  return {**setup.trainables, 'lora_b': jax.tree_util.tree_unflatten(treedef, drawn)}


def _data(images, validation_nll=lambda t: 0., num_train=40):
  """Two batches of the tiny images, the second's last example padding."""
  batches = [{'inputs': images, 'mask': jnp.ones(B, bool)},
             {'inputs': images[::-1], 'mask': jnp.arange(B) < B - 1}]
  return base.PosteriorData(batches, num_train, validation_nll, jax.random.key(9))


def test_laplace_lora_trains_one_lora_of_lora_ensembles_shapes(tiny, built):
  setup, lora = built('laplace_lora'), built('lora_ensemble')
  assert set(setup.trainables) == {'lora_a', 'lora_b', 'head'}
  assert {x.shape[0] for x in jax.tree_util.tree_leaves(setup.trainables)} == {1}
  assert jax.tree_util.tree_map(lambda x: x.shape[1:], setup.trainables) == \
      jax.tree_util.tree_map(lambda x: x.shape[1:], lora.trainables)
  assert setup.trainable_per_member == lora.trainable_per_member
  assert setup.fit_posterior is not None and lora.fit_posterior is None
  record = methods.get('laplace_lora')
  assert (record.reported_members(M), record.trained_copies(M)) == (M, 1)


@pytest.mark.slow  # over 5 s on 2 cores
def test_ggn_diagonal_over_the_lora_weights_matches_dense_jacobians(tiny, built):
  _, images, _ = tiny
  setup = built('laplace_lora')
  trainables = _trained(setup)
  data = _data(images)
  ggn, count = laplace_lora.ggn_diagonal(setup.forward, setup.frozen, trainables,
                                         data.batches)
  assert count == 2 * B - 1
  # Independently: dense Jacobians of the logits in the flattened LoRA weights,
  # diag(Σ_n J_nᵀ (diag p_n − p_n p_nᵀ) J_n) over the unmasked examples.
  lora = base.unstack_first({k: trainables[k] for k in ('lora_a', 'lora_b')})
  flat, unravel = jax.flatten_util.ravel_pytree(lora)

  def logits(flat_lora, x):
    member = {'head': trainables['head'], **jax.tree_util.tree_map(
        lambda v: v[None], unravel(flat_lora))}
    return setup.forward(setup.frozen, member, x, jax.random.key(0), False)[0]

  expected = np.zeros(flat.shape)
  for batch in data.batches:
    jac = np.asarray(jax.jacrev(logits)(flat, batch['inputs']))  # (B, C, P)
    p = np.asarray(jax.nn.softmax(logits(flat, batch['inputs'])))
    for n in np.flatnonzero(np.asarray(batch['mask'])):
      hessian = np.diag(p[n]) - np.outer(p[n], p[n])
      expected += np.einsum('cp,cd,dp->p', jac[n], hessian, jac[n])
  got, _ = jax.flatten_util.ravel_pytree(ggn)
  assert expected.max() > 0
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6 * expected.max())


@pytest.mark.slow  # over 5 s on 2 cores
def test_fit_posterior_draws_m_members_around_the_map_and_picks_the_best_validation_nll(
    tiny, built):
  _, images, _ = tiny
  setup = built('laplace_lora')
  trainables = _trained(setup)
  seen = []

  def validation_nll(members):
    seen.append(members)
    return [3., 1., 2.][len(seen) - 1]

  fit = laplace_lora.fit_posterior(setup.forward, (0.1, 10., 1000.), M, setup.frozen,
                                   trainables, _data(images, validation_nll))
  assert fit.info['prior_precision'] == 10.
  assert fit.info['validation_nll'] == {'0.1': 3., '10': 1., '1000': 2.}
  assert (fit.info['fit_examples'], fit.info['train_examples']) == (2 * B - 1, 40)
  jax.tree_util.tree_map(np.testing.assert_array_equal, fit.trainables, seen[1])
  assert {x.shape[0] for x in jax.tree_util.tree_leaves(fit.trainables)} == {M}
  for m in range(M):  # the MAP head in every member
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a[m], b[0]),
                           fit.trainables['head'], trainables['head'])
  a = tree.flatten_paths(fit.trainables['lora_a'])
  assert all(not np.allclose(x[0], x[1]) for x in a.values())  # members differ
  # Common draws: a larger prior precision only shrinks every member towards the MAP.
  leaves = jax.tree_util.tree_leaves
  spread = [float(sum(jnp.sum((d - m) ** 2) for d, m in zip(leaves(t['lora_a']),
                                                            leaves(trainables['lora_a']))))
            for t in seen]
  assert spread[0] > spread[1] > spread[2] > 0
  logits = eval_logits(setup, fit.trainables, images)
  assert logits.shape == (M, B, C)


def test_an_infinite_prior_precision_makes_every_member_the_map(tiny, built):
  _, images, _ = tiny
  setup = built('laplace_lora')
  trainables = _trained(setup)
  fit = laplace_lora.fit_posterior(setup.forward, (np.inf,), M, setup.frozen, trainables,
                                   _data(images))
  jax.tree_util.tree_map(
      lambda members, map_: np.testing.assert_array_equal(
          members, np.broadcast_to(map_, members.shape)), fit.trainables, trainables)
  logits = eval_logits(setup, fit.trainables, images)
  map_logits = eval_logits(setup, trainables, images)[0]
  for member in logits:  # equal up to the vmapped forward's float rounding
    np.testing.assert_allclose(member, map_logits, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('grid', [(), (1., 0.), (1., float('nan')), ('a',)])
def test_a_bad_prior_precision_grid_names_the_config_key(tiny, grid):
  with pytest.raises(ValueError, match=r'^config.laplace_prior_precisions=.* must be a '):
    methods.build('laplace_lora', tiny[0], method_config(laplace_prior_precisions=grid),
                  jax.random.key(0))
