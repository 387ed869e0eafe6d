"""The factored execution path and its cost model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sve_jax
from sve_jax import execution as sve_factored

from conftest import intermediate_shapes


def _apply(model):
  return lambda p, x: model.apply({'params': p}, x)


def test_factored_path_equals_compose_path(tiny):
  model, params, images = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(2), frozen, s, 3, noise_std=0.2)
  variables = {'frozen': frozen, 'trainables': trainables}
  composed = sve_jax.make_sve_apply(_apply(model), 'compose')(variables, images)
  factored = sve_jax.make_sve_apply(_apply(model), 'factored')(variables, images)
  np.testing.assert_allclose(factored, composed, atol=1e-5)


def test_factored_path_never_forms_member_kernels():
  import flax.linen as nn
  model = nn.Dense(40)  # distinctive (24, 40) kernel
  x = jnp.ones((2, 24))
  params = model.init(jax.random.key(0), x)['params']
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(1), frozen, s, 3)
  variables = {'frozen': frozen, 'trainables': trainables}
  composed = intermediate_shapes(sve_jax.make_sve_apply(_apply(model), 'compose'), variables, x)
  factored = intermediate_shapes(sve_jax.make_sve_apply(_apply(model), 'factored'), variables, x)
  assert (3, 24, 40) in composed
  assert not {(3, 24, 40), (24, 40)} & factored


def test_auto_follows_the_cost_model():
  # Few positions → factored is cheaper; many positions → composing once is cheaper.
  assert sve_jax.prefer_factored(num_positions=16, d_in=768, d_out=768, rank=768)
  assert not sve_jax.prefer_factored(num_positions=4096, d_in=768, d_out=768, rank=768)
  # With the backward pass counted, a square kernel stays factored up to N = 2d, and an
  # FFN-shaped one at any N.
  square = dict(d_in=384, d_out=384, rank=384)
  assert not sve_jax.prefer_factored(num_positions=640, **square)
  assert sve_jax.prefer_factored(num_positions=640, training=True, **square)
  assert not sve_jax.prefer_factored(num_positions=800, training=True, **square)
  assert sve_jax.prefer_factored(num_positions=10**6, d_in=384, d_out=1536, rank=384,
                                 training=True)


@pytest.mark.parametrize('training', [False, True])
def test_path_costs_match_xla_flop_counts(training):
  """The cost model's multiply-adds are what XLA counts in the compiled computation."""
  n, d_in, d_out, r = 256, 64, 192, 64
  k = jax.random.split(jax.random.key(0), 3)
  u = jax.random.normal(k[0], (d_in, r))
  vh = jax.random.normal(k[1], (r, d_out))
  x, s = jax.random.normal(k[2], (n, d_in)), jnp.ones((r,))
  paths = {'compose': lambda x, s: x @ ((u * s) @ vh),
           'factored': lambda x, s: ((x @ u) * s) @ vh}
  model = sve_factored.path_costs(n, d_in, d_out, r, training)
  for name, layer in paths.items():
    fn = (jax.grad(lambda x, s, layer=layer: jnp.sum(layer(x, s) ** 2), argnums=(0, 1))
          if training else layer)
    analysis = jax.jit(fn).lower(x, s).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    # Elementwise work (scaling by s, the loss) adds well under 2%.
    assert analysis['flops'] / 2 == pytest.approx(model[name], rel=0.02), name


def test_training_apply_runs_auto_factored_where_the_backward_pass_favours_it():
  import flax.linen as nn
  model = nn.Dense(48)  # square-ish (48, 48) kernel
  x = jnp.ones((70, 48))  # d < N < 2d: compose for inference, factored for training
  params = model.init(jax.random.key(0), x)['params']
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(1), frozen, s, 3)
  variables = {'frozen': frozen, 'trainables': trainables}
  infer = sve_jax.make_sve_apply(_apply(model), 'auto')
  train = sve_jax.make_sve_apply(_apply(model), 'auto', training=True)
  assert (3, 48, 48) in intermediate_shapes(infer, variables, x)
  assert (3, 48, 48) not in intermediate_shapes(train, variables, x)
  np.testing.assert_allclose(train(variables, x), infer(variables, x), rtol=1e-4, atol=1e-5)


def test_materializing_pays_off_over_many_batches_not_for_one_small_call():
  import flax.linen as nn
  model = nn.Dense(64)
  x = jnp.ones((5, 7, 64))  # 35 positions per call
  params = model.init(jax.random.key(0), x)['params']
  frozen, s = sve_jax.decompose(params)
  member_0 = jax.tree_util.tree_map(lambda v: v, s)
  positions = sve_factored.kernel_positions(_apply(model), frozen, member_0, x)
  assert positions == {'kernel': 35}
  # Composing costs 64³ once; factored costs 35·64·128 per call and the plain forward
  # 35·64² per call: composing wins from the second call on.
  assert not sve_jax.materialize_pays_off(frozen, positions, num_calls=1)
  assert sve_jax.materialize_pays_off(frozen, positions, num_calls=2)
