"""Baselines behind the SVE interface: shapes, steps, member independence, each method's math.

Most tests run a tiny linen model with a Conv, a LayerNorm, Flax attention (DenseGeneral
kernels), a Dense, dropout and a zero head; backbone-specific ones use the tiny BERT; two run
``train.run`` end to end.
"""
import dataclasses
import functools
import json
import os
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sve_jax
import train
from sve_jax.train import loop
from conftest import tiny_train_config
from sve_jax import layout
from sve_jax import methods
from sve_jax import tree
from sve_jax import models
from sve_jax.train import steps
from sve_jax.train import state as train_state
from sve_jax.data import pipeline
from sve_jax.methods import base
from sve_jax.models import vit

M, B, C = 3, 4, 3
# SVE's member independence is tested in test_training.py.
ENSEMBLES = ('deep_ensemble', 'lora_ensemble', 'batch_ensemble')
TINY_ATTENTION_RULES = ((r'(^|/)attention/(query|key|value|out)/kernel$', 'decompose'),
                        (r'(^|/)head/(kernel|bias)$', 'member'))


class TinyDropNet(nn.Module):
  """Conv → LayerNorm → self-attention → Dense → dropout → zero head, like the backbones."""
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, x, *, train=False):
    x = nn.LayerNorm()(nn.Conv(8, (3, 3), name='conv')(x))
    tokens = x.reshape(x.shape[0], -1, x.shape[-1])
    tokens = tokens + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8,
                                                      name='attention')(tokens)
    h = nn.relu(nn.Dense(16, name='dense')(tokens.mean(axis=1)))
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return nn.Dense(C, kernel_init=nn.initializers.zeros, name='head')(h)


def _backbone(dropout_rate=0.1):
  module = TinyDropNet(dropout_rate)
  images = jax.random.normal(jax.random.key(0), (B, 6, 6, 3))
  params = module.init(jax.random.key(1), images)['params']
  return models.Backbone('tiny', module, params, layout.DEFAULT_RULES, 'image',
                         attention_rules=TINY_ATTENTION_RULES, dropout_rate=dropout_rate)


@pytest.fixture(scope='module')
def tiny():
  images = jax.random.normal(jax.random.key(0), (B, 6, 6, 3))
  labels = jnp.array([0, 1, 2, 1])
  return _backbone(), images, labels


def _config(**changes):
  return {'num_members': M, 'noise_std': 0.01, 'execution': 'compose', 'lora_rank': 2,
          **changes}


@pytest.fixture(scope='module')
def built(tiny):
  """``built(method)``: the method on the tiny backbone with :func:`_config`, built once."""
  cache = {}

  def get(method):
    if method not in cache:
      cache[method] = methods.build(method, tiny[0], _config(), jax.random.key(2))
    return cache[method]

  return get


def _train_inputs(setup, images):
  """Training inputs: member-stacked (a distinct batch per member) for per-member data."""
  if not setup.per_member_data:
    return images
  return jnp.stack([jnp.roll(images, m, axis=0) for m in range(M)])


def _eval_logits(setup, trainables, images):
  """The jitted evaluation forward ``(M, B, C)``."""
  forward = jax.jit(functools.partial(setup.forward, train=False))
  return forward(setup.frozen, trainables, images, jax.random.key(0))


def _with_head(params, head):
  return {**params, 'head': head}


def _member(tree, m):
  return jax.tree_util.tree_map(lambda x: x[m], tree)


@pytest.mark.parametrize('method', methods.METHODS)
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
  for train_, x, members in ((True, inputs, trained), (False, images, reported)):
    logits = jax.eval_shape(lambda t, x, r, train_=train_: setup.forward(
        setup.frozen, t, x, r, train_), setup.trainables, x, jax.random.key(3))
    assert logits.shape == (members, B, C)

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


def test_mc_dropout_samples_differ_and_are_reproducible(tiny):
  backbone, images, _ = tiny
  setup = methods.build('mc_dropout', backbone, _config(num_members=4), jax.random.key(2))
  eval_fn = jax.jit(steps.make_eval_step(setup.forward))
  a = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(7)))
  again = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(7)))
  other = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(8)))
  assert a.shape == (4, B, C)
  np.testing.assert_array_equal(a, again)
  assert not np.allclose(a, other)
  assert all(not np.allclose(a[i], a[j]) for i in range(4) for j in range(i))
  # Every sample is the trained model with dropout on: its mean is near the deterministic one.
  deterministic = jax.jit(backbone.apply)(_member(setup.trainables, 0), images)
  assert np.abs(a.mean(0) - deterministic).max() < np.abs(a - deterministic).max()


def test_mc_dropout_without_dropout_names_the_config_key(tiny):
  with pytest.raises(ValueError, match='config.model.dropout_rate'):
    methods.build('mc_dropout', _backbone(dropout_rate=0.), _config(), jax.random.key(0))


def test_config_dropout_rate_reaches_the_bert_backbone(tiny_bert_folder):
  model = {'name': 'bert', 'path': tiny_bert_folder, 'pooling': '', 'max_length': 8,
           'dropout_rate': 0.}
  backbone = models.load_backbone(model, num_classes=2)
  assert backbone.dropout_rate == 0.
  assert backbone.module.dropout_rate == backbone.module.attention_dropout_rate == 0.
  with pytest.raises(ValueError, match='config.model.dropout_rate'):
    methods.build('mc_dropout', backbone, _config(), jax.random.key(0))
  own = models.load_backbone({**model, 'dropout_rate': -1.}, num_classes=2)
  assert own.dropout_rate == 0.1  # transformers' BertConfig default, saved in config.json
  with pytest.raises(ValueError, match=r'config.model.dropout_rate=1.5 must be'):
    models.validate_model_config({**model, 'dropout_rate': 1.5})


# --------------------------------------------------------------------------------------------
# Deep ensemble.
# --------------------------------------------------------------------------------------------


def test_deep_ensemble_members_share_the_backbone_but_not_the_head(tiny, built):
  backbone, _, _ = tiny
  setup = built('deep_ensemble')
  assert setup.frozen == {} and setup.trainable_per_member == tree.num_params(backbone.params)
  for m in range(M):
    member = _member(setup.trainables, m)
    jax.tree_util.tree_map(np.testing.assert_array_equal,
                           {k: v for k, v in member.items() if k != 'head'},
                           {k: v for k, v in backbone.params.items() if k != 'head'})
    np.testing.assert_array_equal(member['head']['bias'], 0.)
  kernels = np.asarray(setup.trainables['head']['kernel'])
  assert np.all(kernels != 0) and np.abs(kernels).max() < 0.06  # N(0, 0.01²), 48 draws/member
  assert all(not np.allclose(kernels[i], kernels[j]) for i in range(M) for j in range(i))
  # Member m's head comes from its own key: the same whatever M is.
  fewer = methods.build('deep_ensemble', backbone, _config(num_members=2), jax.random.key(2))
  np.testing.assert_array_equal(fewer.trainables['head']['kernel'], kernels[:2])


def test_per_member_batches_differ_and_resume_from_one_state():
  source = [{'x': np.float32(i), 'label': np.int32(i % 3)} for i in range(20)]
  config = types.SimpleNamespace(seed=5, batch_size=4, num_epochs=2)
  batches = pipeline.iterate(loop.train_batches(config, source, None, 3))
  stream = [next(batches) for _ in range(7)]
  state = json.loads(json.dumps(batches.get_state()))  # as a checkpoint's meta holds it
  stream += list(batches)
  assert len(stream) == 10  # 5 steps per epoch, 2 epochs
  for batch in stream:
    assert batch['x'].shape == (3, 4) and batch['label'].shape == (3, 4)
    np.testing.assert_array_equal(batch['x'], batch['index'])  # each member's own examples
    assert len({tuple(row) for row in batch['index']}) == 3  # every member its own examples
  # Member m's stream is exactly the single stream seeded config.seed + m.
  for m in range(3):
    single = pipeline.iterate(pipeline.train_dataset(source, global_batch_size=4, seed=5 + m,
                                                     num_epochs=2))
    alone = [batch['index'] for batch in single]
    np.testing.assert_array_equal([batch['index'][m] for batch in stream], alone)
  # One saved state resumes all member streams exactly, in a rebuilt pipeline.
  resumed = list(pipeline.iterate(loop.train_batches(config, source, None, 3), state=state))
  assert len(resumed) == 3
  for a, b in zip(resumed, stream[7:]):
    np.testing.assert_array_equal(a['index'], b['index'])
    np.testing.assert_array_equal(a['example_seed'], b['example_seed'])


# --------------------------------------------------------------------------------------------
# LoRA-Ensemble.
# --------------------------------------------------------------------------------------------


def test_lora_members_start_as_the_backbone_and_add_a_b_to_w(tiny, built):
  backbone, images, _ = tiny
  setup = built('lora_ensemble')
  assert not any(np.any(x) for x in jax.tree_util.tree_leaves(setup.trainables['lora_b']))
  # Members 0 and 2 keep B = 0; member 1 gets B = 1 on the DenseGeneral query kernel.
  trainables = jax.tree_util.tree_map(lambda x: x, setup.trainables)
  trainables['lora_b']['attention']['query']['kernel'] = jnp.zeros((M, 2, 8)).at[1].set(1.)
  logits = _eval_logits(setup, trainables, images)
  apply = jax.jit(backbone.apply)
  for m in (0, 2):
    head = _member(setup.trainables['head'], m)
    np.testing.assert_allclose(logits[m], apply(_with_head(backbone.params, head), images),
                               rtol=1e-5, atol=1e-6)
  a = np.asarray(trainables['lora_a']['attention']['query']['kernel'][1])  # (d_in 8, r 2)
  w = np.asarray(backbone.params['attention']['query']['kernel'])  # (embed, heads, head_dim)
  params = _with_head(backbone.params, _member(setup.trainables['head'], 1))
  params['attention'] = {**params['attention'], 'query': {
      **params['attention']['query'], 'kernel': w + (a @ np.ones((2, 8))).reshape(w.shape)}}
  np.testing.assert_allclose(logits[1], apply(params, images), rtol=1e-4, atol=1e-5)


def test_lora_adapts_exactly_the_bert_attention_matrices_with_gain_10_xavier_a(
    tiny_bert_folder):
  model = {'name': 'bert', 'path': tiny_bert_folder, 'pooling': '', 'max_length': 8}
  backbone = models.load_backbone(model, num_classes=2)
  setup = methods.build('lora_ensemble', backbone, _config(num_members=2, lora_rank=8),
                        jax.random.key(0))
  a = tree.flatten_paths(setup.trainables['lora_a'])
  b = tree.flatten_paths(setup.trainables['lora_b'])
  expected = {('encoder', f'layer_{i}', 'attention', name, 'kernel')
              for i in range(2) for name in ('query', 'key', 'value', 'output')}
  assert set(a) == set(b) == expected
  assert set(setup.trainables) == {'lora_a', 'lora_b', 'head'}
  assert all(x.shape == (2, 32, 8) for x in a.values())
  assert all(x.shape == (2, 8, 32) and not np.any(x) for x in b.values())
  values = np.concatenate([np.asarray(x).ravel() for x in a.values()])  # 4096 draws
  variance = 10. ** 2 * 2 / (32 + 8)  # gain² · 2 / (fan_in + fan_out)
  assert np.var(values) == pytest.approx(variance, rel=0.06)
  bound = np.sqrt(3 * variance)  # Xavier-uniform: U(-gain·sqrt(6 / (fan_in + fan_out)), +...)
  assert np.abs(values).max() <= bound and np.abs(values).max() > 0.98 * bound
  assert abs(values.mean()) < 0.1
  first = next(iter(a.values()))
  assert not np.allclose(first[0], first[1])  # each member its own draw
  # Per member: 8 matrices × (32·8 + 8·32) plus a 32·2 + 2 head.
  assert setup.trainable_per_member == 8 * 2 * 32 * 8 + 66


def test_vit_attention_rules_select_qkv_and_proj_only():
  config = vit.ViTConfig(patch_size=4, width=16, depth=2, num_heads=2, img_size=8,
                         num_classes=3)
  shapes = jax.eval_shape(vit.ViT(config).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))['params']
  kernels, members = layout.select(shapes, vit.ATTENTION_RULES)
  assert set(kernels) == {(f'blocks_{i}', 'attn', name, 'kernel')
                          for i in range(2) for name in ('qkv', 'proj')}
  assert {'/'.join(p) for p in members} == {
      f'blocks_{i}/attn/{name}/bias' for i in range(2) for name in ('qkv', 'proj')} | {
          'head/kernel', 'head/bias'}


def test_lora_on_a_backbone_without_attention_raises(tiny):
  backbone = dataclasses.replace(tiny[0], name='efficientnet_lite0', attention_rules=None)
  with pytest.raises(ValueError, match='no attention'):
    methods.build('lora_ensemble', backbone, _config(), jax.random.key(0))


# --------------------------------------------------------------------------------------------
# BatchEnsemble.
# --------------------------------------------------------------------------------------------


def test_batch_ensemble_starts_from_unit_fast_weights_copied_biases_and_fresh_heads(tiny):
  backbone, _, _ = tiny
  setup = methods.build('batch_ensemble', backbone, _config(noise_std=0.), jax.random.key(2))
  fast = jax.tree_util.tree_leaves({k: setup.trainables[k] for k in ('fast_r', 'fast_s')})
  assert all(np.all(np.asarray(x) == 1.) for x in fast)
  per_member = setup.trainables['params']
  assert set(per_member) == {'conv', 'attention', 'dense', 'head'}
  for m in range(M):
    member = _member({k: v for k, v in per_member.items() if k != 'head'}, m)
    jax.tree_util.tree_map(np.testing.assert_array_equal, member,
                           {k: {n: {'bias': backbone.params[k][n]['bias']} for n in v}
                            if k == 'attention' else {'bias': backbone.params[k]['bias']}
                            for k, v in member.items()})
  kernels = np.asarray(per_member['head']['kernel'])
  assert all(not np.allclose(kernels[i], kernels[j]) for i in range(M) for j in range(i))
  # Per member: r and s of the conv (27 + 8), dense (8 + 16) and 4 attention kernels
  # (4 · (8 + 8)); the biases of those layers (8 + 16 + 3 · 8 + 8); the head (16 · 3 + 3).
  assert setup.trainable_per_member == 35 + 24 + 64 + 56 + 51


def test_batch_ensemble_scales_w_elementwise_by_r_s_transposed(tiny, built):
  backbone, images, _ = tiny
  setup = built('batch_ensemble')
  # Member 0: r = s = 1 (must be the backbone with its own biases and head); member 1:
  # visibly non-unit r, s checked against numpy; member 2 as initialised.
  draw = lambda x, k: jnp.ones_like(x).at[1].set(
      jax.random.uniform(jax.random.key(k), x.shape[1:], minval=0.5, maxval=1.5))
  trainables = jax.tree_util.tree_map(lambda x: x, setup.trainables)
  for i, name in enumerate(('fast_r', 'fast_s')):
    trainables[name] = jax.tree_util.tree_map(lambda x, i=i: draw(x, i), trainables[name])
  logits = _eval_logits(setup, trainables, images)
  apply = jax.jit(backbone.apply)

  def params_with(m, kernels):
    params = jax.tree_util.tree_map(lambda x: x, backbone.params)
    for path, value in {**tree.flatten_paths(_member(trainables['params'], m)),
                        **kernels}.items():
      tree.nested_set(params, path, value)
    return params

  np.testing.assert_allclose(logits[0], apply(params_with(0, {}), images), rtol=1e-5,
                             atol=1e-6)
  t1 = _member(trainables, 1)
  r = {k: np.asarray(v) for k, v in tree.flatten_paths(t1['fast_r']).items()}
  s = {k: np.asarray(v) for k, v in tree.flatten_paths(t1['fast_s']).items()}
  w = {k: np.asarray(v) for k, v in tree.flatten_paths(backbone.params).items()}
  dense, conv = ('dense', 'kernel'), ('conv', 'kernel')
  assert r[dense].shape == (8,) and s[dense].shape == (16,)
  kernels = {dense: w[dense] * np.outer(r[dense], s[dense]),  # (in, out) ⊙ r sᵀ
             conv: w[conv] * r[conv].reshape(3, 3, 3, 1) * s[conv]}  # rows: (kh, kw, c_in)
  for name in ('query', 'key', 'value', 'out'):
    # (embed, heads, head_dim) and (heads, head_dim, embed): input axes lead, 8 × 8 matrices.
    path = ('attention', name, 'kernel')
    kernels[path] = (w[path].reshape(8, 8) * np.outer(r[path], s[path])).reshape(w[path].shape)
  np.testing.assert_allclose(logits[1], apply(params_with(1, kernels), images), rtol=1e-4,
                             atol=1e-5)


# --------------------------------------------------------------------------------------------
# SVE's dropout.
# --------------------------------------------------------------------------------------------


def test_sve_dropout_drops_per_member_in_training_and_leaves_evaluation_alone(tiny):
  backbone, images, _ = tiny
  # A non-zero head, so that dropout before it shows in the logits; no noise, so that the
  # members' params are the same and only their dropout can tell them apart.
  head = {'kernel': jax.random.normal(jax.random.key(5), (16, C)), 'bias': jnp.zeros(C)}
  backbone = dataclasses.replace(backbone, params={**backbone.params, 'head': head})
  plain = methods.build('sve', backbone, _config(noise_std=0.), jax.random.key(2))
  drop = methods.build('sve', backbone, _config(noise_std=0., sve_dropout=True),
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
    params = sve_jax.compose(drop.frozen, _member(drop.trainables, m))
    expected = backbone.apply(params, images, train=True, rngs={'dropout': keys[m]})
    np.testing.assert_allclose(logits[m], expected, rtol=1e-5, atol=1e-6)
  assert all(not np.allclose(logits[i], logits[j]) for i in range(M) for j in range(i))
  assert not np.allclose(run(drop, True, jax.random.key(4)), logits)


# --------------------------------------------------------------------------------------------
# End to end.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('method', ['deep_ensemble', 'mc_dropout'])
def test_train_run_reports_members_and_trainable_counts(method, tiny_bert_folder,
                                                       shared_data_dir, tmp_path):
  config = tiny_train_config(tiny_bert_folder, shared_data_dir, **{
      'method': method, 'ood.name': '', 'num_epochs': 1, 'data.max_train_examples': 16,
      'data.max_eval_examples': 8})
  workdir = str(tmp_path / method)
  results = train.run(config, workdir, 'train')
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  backbone = models.load_backbone(config.model, num_classes=3)
  full = tree.num_params(backbone.params)
  assert saved['method'] == method and saved['num_members'] == 2
  assert len(saved['members']) == 2
  assert saved['params']['backbone'] == full
  assert saved['params']['trainable_per_member'] == full  # every param, head included
  copies = 2 if method == 'deep_ensemble' else 1
  assert saved['params']['trainable_total'] == copies * full
  assert saved['params']['overhead'] == pytest.approx(copies)
  assert saved['learning_rate'] == config.optim.full_finetune_learning_rate
  assert 0. <= results['test']['accuracy'] <= 1.


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


@pytest.mark.parametrize('key,value,message', [
    ('optim.full_finetune_learning_rate', 0.,
     'config.optim.full_finetune_learning_rate=0.0 must be > 0, or -1'),
    ('lora_rank', 0, 'config.lora_rank=0 must be >= 1'),
    ('optim.lora_learning_rate', 0., 'config.optim.lora_learning_rate=0.0 must be > 0, or -1'),
    ('model.dropout_rate', 1.5, 'config.model.dropout_rate=1.5 must be'),
])
def test_bad_method_config_fails_before_heavy_work(key, value, message, tmp_path):
  config = tiny_train_config('', str(tmp_path / 'data'), **{key: value})
  with pytest.raises(ValueError, match=message):
    train.run(config, str(tmp_path / 'w'), 'train')
  assert not os.path.exists(tmp_path / 'data')
