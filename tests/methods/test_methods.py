"""Baselines behind the SVE interface: shapes, steps, member independence, each method's math.

Most tests run a tiny linen model with a Conv, a LayerNorm, Flax attention (DenseGeneral
kernels), a Dense, dropout and a zero head; backbone-specific ones use the tiny BERT; two run
``train.run`` end to end.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sve_jax import methods
from sve_jax import tree
from sve_jax.train import steps
from sve_jax.train import state as train_state
# pytest finds the fixtures tiny and built by these names.
from tiny_methods import B, C, M, built, method_config, tiny, with_head

# SVE's member independence is tested in test_training.py.
ENSEMBLES = ('deep_ensemble', 'lora_ensemble', 'batch_ensemble')


def _train_inputs(setup, images):
  """Training inputs: member-stacked (a distinct batch per member) for per-member data."""
  if not setup.per_member_data:
    return images
  return jnp.stack([jnp.roll(images, m, axis=0) for m in range(M)])


@pytest.mark.parametrize('method', methods.METHODS)
@pytest.mark.slow  # over 5 s on 2 cores
def test_forward_shapes_and_a_train_step_updates_only_the_trainables(method, tiny, built):
  backbone, images, labels = tiny
  setup = built(method)
  trained = methods.get(method).trained_copies(M)
  reported = methods.get(method).reported_members(M)
  assert reported == (1 if method in ('single_svf', 'single_ft') else M)
  assert setup.name == method
  assert setup.per_member_data == (method == 'deep_ensemble')
  assert tree.num_params(setup.trainables) == trained * setup.trainable_per_member
  assert {x.shape[0] for x in jax.tree_util.tree_leaves(setup.trainables)} == {trained}
  assert setup.backbone_params == tree.num_params(backbone.params)

  inputs = _train_inputs(setup, images)
  # A method with a posterior evaluates its M members (stand-ins: copies of the trained one).
  evaluated = setup.trainables if setup.fit_posterior is None else (
      methods.base.identical_copies(methods.base.unstack_first(setup.trainables), reported))
  for train_, t, x, members in ((True, setup.trainables, inputs, trained),
                                (False, evaluated, images, reported)):
    logits = jax.eval_shape(lambda t, x, r, train_=train_: setup.forward(
        setup.frozen, t, x, r, train_), t, x, jax.random.key(3))
    assert logits.shape == (members, B, C)
  logits, features = jax.eval_shape(lambda t, x, r: setup.features(
      setup.frozen, t, x, r, False), evaluated, images, jax.random.key(3))
  assert logits.shape == (reported, B, C) and features.shape == (reported, B, 16)

  if method in ('sve', 'single_svf'):
    return  # their step is SVE's own, run in test_training.py and test_train.py
  optimizer = optax.sgd(0.1)
  state = train_state.create_train_state(setup.trainables, optimizer, jax.random.key(4))
  frozen_before = jax.tree_util.tree_map(np.array, setup.frozen)
  labels = jnp.broadcast_to(labels, (trained, B)) if setup.per_member_data else labels
  new, metrics = jax.jit(steps.make_train_step(setup.forward, optimizer))(
      state, setup.frozen, {'inputs': inputs, 'label': labels})
  assert np.isfinite(float(metrics['loss'])) and metrics['member_loss'].shape == (trained,)
  assert int(new.step) == 1
  assert jax.tree_util.tree_structure(new.trainables) == jax.tree_util.tree_structure(
      setup.trainables)
  moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                 new.trainables, setup.trainables)
  assert any(jax.tree_util.tree_leaves(moved))
  jax.tree_util.tree_map(np.testing.assert_array_equal, setup.frozen, frozen_before)


@pytest.mark.parametrize('method', methods.METHODS)
def test_the_features_forward_gives_the_forwards_logits_and_each_members_head_input(
    method, tiny):
  backbone, images, _ = tiny
  # A non-zero head: the logits then show that the features are what it reads.
  head = {'kernel': jax.random.normal(jax.random.key(7), (16, C)), 'bias': jnp.ones(C)}
  backbone = dataclasses.replace(backbone, params=with_head(backbone.params, head))
  setup = methods.build(method, backbone, method_config(noise_std=0.), jax.random.key(2))
  both = jax.jit(lambda t, x, r: (setup.forward(setup.frozen, t, x, r, False),
                                  setup.features(setup.frozen, t, x, r, False)))
  plain, (logits, features) = both(setup.trainables, images, jax.random.key(3))
  np.testing.assert_allclose(logits, plain, rtol=1e-5, atol=1e-6)
  if method in ('sve', 'single_svf'):  # zero noise, the backbone's head: members = backbone
    _, expected = backbone.apply_with_features(backbone.params, images)
    for member in features:
      np.testing.assert_allclose(member, expected, rtol=1e-4, atol=1e-5)
  elif method != 'mc_dropout':  # each member's head applied to its features: its logits
    heads = setup.trainables.get('head') or setup.trainables['params']['head']
    np.testing.assert_allclose(
        jnp.einsum('mbd,mdc->mbc', features, heads['kernel']) + heads['bias'][:, None],
        logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('method', ENSEMBLES)
def test_member_0_loss_has_no_gradient_on_member_1(method, tiny, built):
  _, images, labels = tiny
  setup = built(method)
  inputs = _train_inputs(setup, images)

  def member_0_loss(trainables):
    logits = setup.forward(setup.frozen, trainables, inputs, jax.random.key(3), True)
    return steps.member_cross_entropy(logits, labels)[0]

  grads = jax.jit(jax.grad(member_0_loss))(setup.trainables)
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(np.all(np.asarray(g[1:]) == 0) for g in leaves)
  assert any(np.any(np.asarray(g[0]) != 0) for g in leaves)


# --------------------------------------------------------------------------------------------
# MC dropout.
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Deep ensemble.
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# LoRA-Ensemble.
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# BatchEnsemble.
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# SVE's dropout.
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# End to end.
# --------------------------------------------------------------------------------------------


#: What sve_jax/methods/__init__.py documents per method, for config.num_members = M: the M
#: it reports, the copies it trains, and the config.optim field of its learning rate.
DOCUMENTED = {
    'sve': (M, M, 'learning_rate'),
    'single_svf': (1, 1, 'learning_rate'),
    'single_ft': (1, 1, 'full_finetune_learning_rate'),
    'deep_ensemble': (M, M, 'full_finetune_learning_rate'),
    'mc_dropout': (M, 1, 'full_finetune_learning_rate'),
    'lora_ensemble': (M, M, 'lora_learning_rate'),
    'batch_ensemble': (M, M, 'learning_rate'),
    'laplace_lora': (M, 1, 'lora_learning_rate'),
}


def test_method_records_hold_the_documented_members_and_learning_rate():
  assert methods.METHODS == tuple(DOCUMENTED)
  optim = {'learning_rate': 1e-3, 'full_finetune_learning_rate': 5e-5,
           'lora_learning_rate': 2e-4}
  for name, (reported, trained, rate_field) in DOCUMENTED.items():
    method = methods.get(name)
    assert method.name == name
    assert (method.reported_members(M), method.trained_copies(M)) == (reported, trained), name
    assert method.learning_rate(optim) == optim[rate_field], name
  same = {'learning_rate': 1e-3, 'full_finetune_learning_rate': -1, 'lora_learning_rate': -1}
  assert methods.get('single_ft').learning_rate(same) == 1e-3
  assert methods.get('lora_ensemble').learning_rate(same) == 1e-3
  with pytest.raises(ValueError, match="config.method='nope' is not a known method"):
    methods.get('nope')


