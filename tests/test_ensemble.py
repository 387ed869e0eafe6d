"""init_members / sve_apply / the two execution paths / parameter accounting."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sve_jax
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


@pytest.mark.slow  # over 5 s on 2 cores
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


