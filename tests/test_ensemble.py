"""init_members / sve_apply / the two execution paths / parameter accounting."""
import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import sve_jax
from sve_jax import execution as sve_factored
from sve_jax import factorize
from sve_jax import tree


def _apply(model):
  return lambda p, x: model.apply({'params': p}, x)


@pytest.mark.parametrize('execution', ['compose', 'factored', 'auto'])
def test_zero_noise_members_equal_the_original_model(tiny, execution):
  model, params, images = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 3, noise_std=0.)
  out = jax.jit(sve_jax.make_sve_apply(_apply(model), execution))(
      {'frozen': frozen, 'trainables': trainables}, images)
  reference = model.apply({'params': params}, images)
  assert out.shape == (3,) + reference.shape
  np.testing.assert_allclose(out, jnp.broadcast_to(reference, out.shape), atol=1e-5)


def test_vmap_over_members_equals_python_loop(tiny):
  model, params, images = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(1), frozen, s, 4, noise_std=0.1)
  out = sve_jax.make_sve_apply(_apply(model))({'frozen': frozen, 'trainables': trainables},
                                              images)
  for m in range(4):
    s_m = jax.tree_util.tree_map(lambda x: x[m], trainables)
    expected = model.apply({'params': sve_jax.compose(frozen, s_m)}, images)
    np.testing.assert_allclose(out[m], expected, atol=1e-5)
  assert float(jnp.abs(out[0] - out[1]).max()) > 1e-4  # noise makes members differ


def test_factored_path_equals_compose_path(tiny):
  model, params, images = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(2), frozen, s, 3, noise_std=0.2)
  variables = {'frozen': frozen, 'trainables': trainables}
  composed = sve_jax.make_sve_apply(_apply(model), 'compose')(variables, images)
  factored = sve_jax.make_sve_apply(_apply(model), 'factored')(variables, images)
  np.testing.assert_allclose(factored, composed, atol=1e-5)


def _intermediate_shapes(fn, *args):
  shapes = set()

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      for var in eqn.outvars:
        shapes.add(tuple(var.aval.shape))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return shapes


def test_factored_path_never_forms_member_kernels():
  import flax.linen as nn
  model = nn.Dense(40)  # distinctive (24, 40) kernel
  x = jnp.ones((2, 24))
  params = model.init(jax.random.key(0), x)['params']
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(1), frozen, s, 3)
  variables = {'frozen': frozen, 'trainables': trainables}
  composed = _intermediate_shapes(sve_jax.make_sve_apply(_apply(model), 'compose'), variables, x)
  factored = _intermediate_shapes(sve_jax.make_sve_apply(_apply(model), 'factored'), variables, x)
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
  assert (3, 48, 48) in _intermediate_shapes(infer, variables, x)
  assert (3, 48, 48) not in _intermediate_shapes(train, variables, x)
  np.testing.assert_allclose(train(variables, x), infer(variables, x), rtol=1e-4, atol=1e-5)


def test_init_members_noise_follows_the_method():
  params = {'d': {'kernel': jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)),
                                        jnp.float32),
                  'bias': jnp.zeros((64,))}}
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(3), frozen, s, 64, noise_std=0.05)
  rel = trainables['d']['kernel'] / s['d']['kernel'][None] - 1.
  assert abs(float(rel.std()) - 0.05) < 0.005 and abs(float(rel.mean())) < 0.005
  assert float(trainables['d']['kernel'].min()) >= 0.
  # Additive noise on per-member leaves: a zero bias becomes N(0, σ²).
  assert abs(float(trainables['d']['bias'].std()) - 0.05) < 0.005
  exact = sve_jax.init_members(jax.random.key(3), frozen, s, 2, noise_std=0.)
  np.testing.assert_array_equal(exact['d']['kernel'][1], s['d']['kernel'])
  with pytest.raises(ValueError, match='num_members must be >= 1'):
    sve_jax.init_members(jax.random.key(3), frozen, s, 0)


def _bert_base_shaped(layers=12, d=768, ffn=3072, vocab=30522):
  """Abstract BERT-base params (no head, no pooler): shapes only, no SVD work."""
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  dense = lambda i, o: {'kernel': f32(i, o), 'bias': f32(o)}
  norm = {'scale': f32(d), 'bias': f32(d)}
  params = {'embeddings': {'word_embeddings': {'embedding': f32(vocab, d)},
                           'position_embeddings': {'embedding': f32(512, d)},
                           'token_type_embeddings': {'embedding': f32(2, d)},
                           'LayerNorm': norm}}
  for i in range(layers):
    params[f'layer_{i}'] = {
        'attention': {'query': dense(d, d), 'key': dense(d, d), 'value': dense(d, d),
                      'output': dense(d, d), 'LayerNorm': norm},
        'intermediate': dense(d, ffn), 'output': dense(ffn, d), 'output_LayerNorm': norm}
  return params


def test_count_params_bert_base_overhead_under_one_percent():
  params = _bert_base_shaped()
  frozen, s = jax.eval_shape(sve_jax.decompose, params)
  trainables = jax.eval_shape(lambda f, s: sve_jax.init_members(jax.random.key(0), f, s, 4),
                              frozen, s)
  counts = sve_jax.count_params(frozen, trainables)
  # Independent count: per layer 4·768 + 768 + 768 singular values, 4·768 + 3072 + 768 biases.
  per_member = 12 * ((4 * 768 + 768 + 768) + (4 * 768 + 3072 + 768))
  backbone = sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
  assert counts['trainable_per_member'] == per_member == 138240
  assert counts['trainable_total'] == 4 * per_member
  assert counts['backbone'] == backbone
  assert counts['overhead'] == pytest.approx(4 * per_member / backbone)
  assert counts['overhead'] < 0.01
  # U and Vᵀ: r·(d_in + d_out) per matrix; 4 attention 768², FFN 768×3072 and 3072×768.
  assert counts['frozen_factors'] == 12 * (4 * 768 * 1536 + 2 * 768 * (768 + 3072))


def test_materialized_members_run_as_plain_models_equal_sve_apply(tiny):
  model, params, images = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(3), frozen, s, 3, noise_std=0.2)
  stacked = sve_jax.materialize_members(frozen, trainables)
  chex.assert_trees_all_equal_structs(stacked, params)
  for leaf, original in zip(jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(params)):
    assert leaf.shape == (3,) + original.shape
  for m in range(3):
    s_m = jax.tree_util.tree_map(lambda x: x[m], trainables)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[m], stacked),
                                sve_jax.compose(frozen, s_m), atol=1e-6)
  plain = jax.vmap(_apply(model), in_axes=(0, None))(stacked, images)
  via_sve = sve_jax.make_sve_apply(_apply(model))({'frozen': frozen, 'trainables': trainables},
                                                   images)
  np.testing.assert_allclose(plain, via_sve, atol=1e-5)


@pytest.mark.parametrize('execution', ['compose', 'auto'])
def test_materialized_kernels_give_sve_apply_s_output_and_keep_shared_leaves_shared(
    tiny, execution):
  model, params, images = tiny
  frozen, s = sve_jax.decompose(params, rules=[(r'norm', 'frozen'), *sve_jax.DEFAULT_RULES])
  trainables = sve_jax.init_members(jax.random.key(3), frozen, s, 3, noise_std=0.2)
  frozen_m, trainables_m = jax.jit(sve_jax.materialize_kernels)(frozen, trainables)
  assert not factorize.layouts(frozen_m)  # nothing left to compose per call
  for path, layout in factorize.layouts(frozen).items():
    kernel = tree.flatten_paths(trainables_m)[tuple(path.split('/'))]
    assert kernel.shape == (3,) + layout.shape
  # The shared leaves are untouched: no member copies of shared weights.
  shared = [n for n in jax.tree_util.tree_leaves(frozen, is_leaf=factorize.is_sve_node)
            if not factorize.is_sve_node(n)]
  assert shared
  chex.assert_trees_all_equal(jax.tree_util.tree_leaves(frozen_m), shared)
  apply = sve_jax.make_sve_apply(_apply(model), execution)
  np.testing.assert_allclose(apply({'frozen': frozen_m, 'trainables': trainables_m}, images),
                             apply({'frozen': frozen, 'trainables': trainables}, images),
                             rtol=1e-5, atol=1e-5)


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
