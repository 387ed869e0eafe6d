"""The recipe knobs of issue 13: schedules, head init, member data order, eval cadence, s movement.

Each knob is off by default (the paper's recipe); these tests check what each one does when
set, against values computed independently here.
"""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sve_jax
import train
from sve_jax.eval import metrics
from sve_jax.train import evaluate as train_evaluate
from conftest import tiny_train_config
from sve_jax import methods
from sve_jax import models
from sve_jax.train import state as train_state


def _cosine(step, lr, total, warmup, init, end):
  """The warm-up + cosine schedule written out by hand."""
  if step < warmup:
    return init + (lr - init) * step / warmup
  progress = (step - warmup) / (total - warmup)
  return end + (lr - end) * 0.5 * (1. + math.cos(math.pi * progress))


def test_default_schedule_is_unchanged_and_official_follows_the_authors_release():
  lr, total = 2e-3, 200
  default = train_state.schedule_for('warmup_cosine', lr, total, warmup_fraction=0.1)
  official = train_state.schedule_for('official', lr, total, warmup_fraction=0.1)
  for step in (0, 7, 20, 21, 100, 150, 199, 200):
    assert float(default(step)) == pytest.approx(_cosine(step, lr, total, 20, 0., 0.),
                                                 rel=1e-5, abs=1e-9)
    # Warm-up over half the steps from lr/5; the cosine ends at 0.1·lr.
    assert float(official(step)) == pytest.approx(_cosine(step, lr, total, 100, lr / 5,
                                                          lr / 10), rel=1e-5)
  assert float(official(0)) == pytest.approx(lr / 5)
  assert float(official(100)) == pytest.approx(lr)
  assert float(official(total)) == pytest.approx(lr / 10)
  with pytest.raises(ValueError, match=r"schedule='linear' must be one of \('warmup_cosine', "
                                       r"'official'\)"):
    train_state.schedule_for('linear', lr, total, 0.1)


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


def test_singular_value_change_is_the_mean_relative_distance_from_pretrained():
  rng = np.random.default_rng(0)
  params = {'a': {'kernel': jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
                  'bias': jnp.zeros((4,))},
            'b': {'kernel': jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)}}
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(1), frozen, s, 3, noise_std=0.2)
  trainables = {**trainables, 'a': {**trainables['a'], 'bias': trainables['a']['bias'] + 9.}}
  expected = np.mean([np.linalg.norm(np.asarray(trainables[k]['kernel'][m]) - s[k]['kernel'])
                      / np.linalg.norm(s[k]['kernel']) for k in 'ab' for m in range(3)])
  assert metrics.singular_value_change(frozen, s, trainables) == pytest.approx(
      expected, rel=1e-5)  # the biases, moved by 9, are not counted
  assert metrics.singular_value_change(
      frozen, s, jax.tree_util.tree_map(lambda x: jnp.stack([x] * 2), s)) == 0.


def test_recipe_knobs_end_to_end_learning_curves_best_checkpoint_and_report(
    tiny_bert_folder, shared_data_dir, tmp_path):
  config = tiny_train_config(tiny_bert_folder, shared_data_dir, **{
      'ood.name': '', 'num_epochs': 1, 'eval_every_steps': 2, 'member_data_order': True,
      'head_init_std': 0.05, 'optim.schedule': 'official', 'optim.learning_rate': 3e-2})
  workdir = str(tmp_path / 'knobs')
  results = train.run(config, workdir, 'train')
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  val = [r for r in records if 'val_accuracy' in r]
  # 48 examples / batch 8 = 6 steps: validated every 2 steps (the last is the epoch end).
  assert [r['step'] for r in val] == [2, 4, 6]
  for r in val:
    assert 0. <= r['val_members_mean_accuracy'] <= 1. and r['val_members_mean_nll'] > 0.
    assert 0. <= r['val_disagreement'] <= 1. and r['val_mutual_information'] >= 0.
    assert r['val_singular_value_change'] > 0.
  # The best checkpoint is the first step with the highest validation accuracy.
  best = max(r['val_accuracy'] for r in val)
  assert results['checkpoint']['best_val_accuracy'] == pytest.approx(best)
  assert results['checkpoint']['best_step'] == next(
      r['step'] for r in val if r['val_accuracy'] == best)
  assert results['validation']['accuracy'] == pytest.approx(best)
  assert results['singular_value_change'] == pytest.approx(next(
      r['val_singular_value_change'] for r in val if r['step'] == results['checkpoint'][
          'best_step']), rel=1e-5)
  # Tweets carry the annotators' agreement: the uncertainties are compared with it.
  human = results['human_disagreement']
  assert 0 < human['num_examples'] <= 24
  assert set(human) == {'entropy', 'mutual_information', 'one_minus_max_prob', 'num_examples'}
  assert all(-1. <= human[k] <= 1. for k in ('entropy', 'one_minus_max_prob'))


def test_split_predictions_keep_each_examples_agreement_beside_its_logits_and_label():
  from sve_jax.train import sharding
  agreement = [np.nan if i % 4 == 0 else i / 10 for i in range(10)]
  source = [{'x': np.float32(i), 'label': i % 3, 'agreement': np.float32(a)}
            for i, a in enumerate(agreement)]
  transform = lambda raw: {'inputs': raw['x'][:, None], 'label': raw['label']}
  eval_fn = lambda trainables, frozen, inputs, rng: jnp.stack([inputs, -inputs])
  # Batches of 4: the last one is padded with copies of example 0, which must not leak.
  mesh = sharding.make_mesh(-1, 1)
  got = train_evaluate.split_predictions(
      eval_fn, None, None, train_evaluate.Split(source, transform), mesh, 4)
  np.testing.assert_array_equal(got.logits[0, :, 0], np.arange(10))
  np.testing.assert_array_equal(got.labels, np.arange(10) % 3)
  np.testing.assert_array_equal(got.agreement, np.asarray(agreement, np.float32))
  without = [{k: v for k, v in example.items() if k != 'agreement'} for example in source]
  assert train_evaluate.split_predictions(
      eval_fn, None, None, train_evaluate.Split(without, transform), mesh, 4).agreement is None


@pytest.mark.parametrize('key,value,message', [
    ('head_init_std', -0.5, 'config.head_init_std=-0.5 must be >= 0, or -1'),
    ('optim.schedule', 'linear', "config.optim.schedule='linear' must be one of"),
    ('eval_every_steps', -1, 'config.eval_every_steps=-1 must be >= 0'),
])
def test_bad_recipe_knobs_fail_before_heavy_work(key, value, message, tmp_path):
  config = tiny_train_config('', str(tmp_path / 'data'), **{key: value})
  with pytest.raises(ValueError, match=message):
    train.run(config, str(tmp_path / 'w'), 'train')
  assert not os.path.exists(tmp_path / 'data')
