"""SVE as a method: its options (dropout, head init, member data order)."""
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sve_jax
from sve_jax import factorize
from sve_jax import methods
from sve_jax import models
# pytest finds the fixtures tiny by these names.
from tiny_methods import C, M, member_of, method_config, tiny


@pytest.mark.slow  # over 5 s on 2 cores
def test_sve_dropout_drops_per_member_in_training_and_leaves_evaluation_alone(tiny):
  backbone, images, _ = tiny
  # A non-zero head, so that dropout before it shows in the logits; no noise, so that the
  # members' params are the same and only their dropout can tell them apart.
  head = {'kernel': jax.random.normal(jax.random.key(5), (16, C)), 'bias': jnp.zeros(C)}
  backbone = dataclasses.replace(backbone, params={**backbone.params, 'head': head})
  plain = methods.build('sve', backbone, method_config(noise_std=0.), jax.random.key(2))
  drop = methods.build('sve', backbone, method_config(noise_std=0., sve_dropout=True),
                       jax.random.key(2))
  rng = jax.random.key(3)

  def run(setup, train, key=rng):
    forward = jax.jit(setup.forward, static_argnums=4)
    return np.asarray(forward(setup.frozen, setup.trainables, images, key, train))

  np.testing.assert_array_equal(run(drop, False), run(plain, False))
  np.testing.assert_allclose(run(plain, True), run(plain, False), rtol=1e-6, atol=1e-6)
  logits = run(drop, True)
  # Member m drops with its own key, jax.random.split(rng, M)[m].
  keys = jax.random.split(rng, M)
  for m in range(M):
    params = sve_jax.compose(drop.frozen, member_of(drop.trainables, m))
    expected = backbone.apply(params, images, train=True, rngs={'dropout': keys[m]})
    np.testing.assert_allclose(logits[m], expected, rtol=1e-5, atol=1e-6)
  assert all(not np.allclose(logits[i], logits[j]) for i in range(M) for j in range(i))
  assert not np.allclose(run(drop, True, jax.random.key(4)), logits)


def _tiny_bert(folder):
  return models.load_backbone({'name': 'bert', 'path': folder, 'pooling': '', 'max_length': 16,
                               'dtype': 'float32', 'dropout_rate': -1}, num_classes=3)


def _sve_config(**changes):
  return {'num_members': 64, 'noise_std': 0.01, 'execution': 'compose', **changes}


def test_head_init_std_draws_heads_apart_from_the_singular_value_noise(tiny_bert_folder):
  backbone = _tiny_bert(tiny_bert_folder)
  key = jax.random.key(4)
  tied = methods.build('sve', backbone, _sve_config(), key).trainables
  setup = methods.build('sve', backbone, _sve_config(head_init_std=0.2), key)
  separate = setup.trainables
  # The head: kernel N(0, 0.2²) independently per member, bias 0.
  kernel = np.asarray(separate['head']['kernel'])
  assert kernel.shape[0] == 64 and abs(kernel.std() - 0.2) < 0.01 and abs(kernel.mean()) < 0.01
  np.testing.assert_array_equal(separate['head']['bias'], 0.)
  assert not np.allclose(kernel[0], kernel[1])
  # Tied (the default): the zero head plus noise_std noise.
  assert abs(float(np.std(tied['head']['kernel'])) - 0.01) < 0.001
  # Everything else (singular values, biases) is drawn exactly as with the tied head.
  tied_rest = {k: v for k, v in tied.items() if k != 'head'}
  separate_rest = {k: v for k, v in separate.items() if k != 'head'}
  jax.tree_util.tree_map(np.testing.assert_array_equal, separate_rest, tied_rest)


@pytest.mark.slow
def test_member_data_order_feeds_member_m_its_own_batch(tiny_bert_folder):
  backbone = _tiny_bert(tiny_bert_folder)
  config = _sve_config(num_members=2, member_data_order=True)
  setup = methods.build('sve', backbone, config, jax.random.key(0))
  assert setup.per_member_data and not methods.build(
      'sve', backbone, _sve_config(num_members=2), jax.random.key(0)).per_member_data
  texts = [['a calm sea', 'storm at noon'], ['the mast broke', 'we sailed home']]
  per_member = [backbone.tokenize(t) for t in texts]
  stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_member)
  trained = setup.forward(setup.frozen, setup.trainables, stacked, jax.random.key(1), True)
  assert trained.shape == (2, 2, 3)
  for m, inputs in enumerate(per_member):
    # Member m on its own batch equals member m of the shared-batch forward on that batch.
    shared = setup.forward(setup.frozen, setup.trainables, inputs, jax.random.key(1), False)
    np.testing.assert_allclose(trained[m], shared[m], rtol=1e-5, atol=1e-6)


def test_attention_only_sve_decomposes_the_attention_projections_and_freezes_the_mlps(
    tiny_bert_folder):
  backbone = _tiny_bert(tiny_bert_folder)

  def decomposed(targets):
    setup = methods.build('sve', backbone, _sve_config(num_members=2, sve_targets=targets),
                          jax.random.key(0))
    return {node.layout.path for node in factorize.factored_nodes(setup.frozen).values()}

  every, attention = decomposed('all'), decomposed('attention')
  layers = {path.split('/attention/')[0] for path in attention}
  assert len(layers) == 2  # the tiny BERT's layers
  # Attention: the 4 projections of every layer; all: those and the 2 MLP kernels.
  assert all(re.search(r'/attention/(query|key|value|output)/kernel$', p) for p in attention)
  assert len(attention) == 4 * len(layers) and len(every) == 6 * len(layers)
  assert attention < every
  with pytest.raises(ValueError,
                     match=r"config.sve_targets='heads' must be one of \('all', 'attention'\)"):
    methods.build('sve', backbone, _sve_config(sve_targets='heads'), jax.random.key(0))
  # A backbone without attention (EfficientNet's) refuses the ablation by name.
  no_attention = dataclasses.replace(backbone, attention_rules=None)
  with pytest.raises(ValueError, match=r"sve_targets='attention': the bert backbone has no "):
    methods.build('sve', no_attention, _sve_config(sve_targets='attention'), jax.random.key(0))
