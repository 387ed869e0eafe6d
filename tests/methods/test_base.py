"""What every method shares: its options record, fresh heads, copies, learning rates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax import layout
from sve_jax import methods
from sve_jax import models
from sve_jax.methods import base


def test_options_read_the_run_configs_keys_and_default_the_missing_ones():
  options = base.MethodOptions.from_config({'num_members': 5, 'noise_std': 0.2,
                                            'lora_rank': 4, 'seed': 3, 'model': {}})
  assert options == base.MethodOptions(num_members=5, noise_std=0.2, lora_rank=4)
  assert (options.execution, options.head_init_std, options.sve_dropout) == ('auto', -1., False)
  with pytest.raises(TypeError):
    base.MethodOptions.from_config({'noise_std': 0.1})  # num_members has no default


def test_build_takes_options_or_a_run_config_alike(tiny):
  model, params, _ = tiny
  backbone = models.Backbone('tiny', model, params, layout.DEFAULT_RULES, 'image')
  config = {'num_members': 2, 'noise_std': 0.05, 'execution': 'compose', 'seed': 0}
  from_config = methods.build('sve', backbone, config, jax.random.key(0))
  from_options = methods.build('sve', backbone, base.MethodOptions.from_config(config),
                               jax.random.key(0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_config.trainables,
                         from_options.trainables)


@pytest.mark.parametrize('seed', range(3))
def test_a_members_fresh_head_does_not_depend_on_how_many_members_there_are(seed):
  head = {'kernel': jnp.ones((6, 3)), 'bias': jnp.ones((3,))}
  key = jax.random.key(seed)
  few, many = base.init_heads(key, head, 2), base.init_heads(key, head, 5)
  np.testing.assert_array_equal(few['kernel'], many['kernel'][:2])
  np.testing.assert_array_equal(many['bias'], np.zeros((5, 3)))
  assert not np.allclose(many['kernel'][0], many['kernel'][1])
  assert abs(float(jnp.std(base.init_heads(key, {'kernel': jnp.ones((64, 64))}, 4)['kernel']))
             - base.HEAD_STD) < 0.002


def test_identical_copies_stack_a_tree_on_a_new_member_axis():
  copies = base.identical_copies({'a': jnp.arange(3.), 'b': {'c': jnp.ones((2, 2))}}, 4)
  assert copies['a'].shape == (4, 3) and copies['b']['c'].shape == (4, 2, 2)
  np.testing.assert_array_equal(copies['a'][3], np.arange(3.))


def test_learning_rate_falls_back_to_the_shared_rate_at_minus_one():
  method = methods.get('single_ft')
  assert method.learning_rate({'learning_rate': 1e-2, 'full_finetune_learning_rate': 3e-5}) == 3e-5
  assert method.learning_rate({'learning_rate': 1e-2, 'full_finetune_learning_rate': -1}) == 1e-2
  assert methods.get('sve').learning_rate({'learning_rate': 1e-2}) == 1e-2
