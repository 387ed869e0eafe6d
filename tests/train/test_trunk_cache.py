"""The trunk feature cache (``config.trunk_cache``): training on the trunk's cached outputs is
training on the raw inputs, and a trunk that is not deterministic is refused in one line."""
import json
import os

import jax
import numpy as np
import pytest

import train
from conftest import tiny_train_config
from sve_jax import methods
from sve_jax import models
from sve_jax.data import pipeline
from sve_jax.data import transforms
from sve_jax.models.backbone import TRUNK_STATE
from sve_jax.train import trunk_cache


def _logged_losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return [(r['step'], r['loss'], r['grad_norm']) for r in records if 'loss' in r]


@pytest.mark.slow  # trains four tiny runs
@pytest.mark.parametrize('member_data_order', [False, True])
def test_training_on_the_cache_gives_the_same_losses(tiny_bert_folder, shared_data_dir,
                                                     tmp_path, member_data_order):
  runs = {}
  for cached in (False, True):
    config = tiny_train_config(tiny_bert_folder, shared_data_dir, **{
        'model.adapted_blocks': 1, 'trunk_cache': cached, 'max_steps': 6,
        'member_data_order': member_data_order})
    workdir = str(tmp_path / f'cached_{cached}')
    results = train.run(config, workdir, 'train')
    runs[cached] = (_logged_losses(workdir), results)
  (raw, raw_results), (cached, cached_results) = runs[False], runs[True]
  assert [step for step, _, _ in raw] == [step for step, _, _ in cached] == list(range(1, 7))
  np.testing.assert_allclose([l for _, l, _ in cached], [l for _, l, _ in raw], rtol=1e-5)
  np.testing.assert_allclose([g for _, _, g in cached], [g for _, _, g in raw], rtol=1e-4)
  assert cached_results['test']['nll'] == pytest.approx(raw_results['test']['nll'], rel=1e-5)


def _tiny_backbone(folder, adapted=1):
  return models.load_backbone({'name': 'bert', 'path': folder, 'pooling': '',
                               'max_length': 16, 'adapted_blocks': adapted}, num_classes=3)


def test_the_cache_holds_the_trunk_outputs_of_every_example(tiny_bert_folder):
  backbone = _tiny_backbone(tiny_bert_folder)
  texts = [f'tweet number {i} is {"good" if i % 2 else "bad"}' for i in range(11)]
  source = [{'text': t.encode(), 'label': i % 3} for i, t in enumerate(texts)]
  transform = transforms.make_transform(backbone, 'text', 'label')
  cached = trunk_cache.build(backbone, source, transform, batch_size=4, max_bytes=2**30)
  assert len(cached) == 11  # the padding of the last batch is dropped
  ids = backbone.tokenize(texts)
  expected = backbone.apply_trunk(backbone.params, ids)
  batch = trunk_cache.to_train_batch(pipeline._collate(cached.__getitems__(range(11))))
  np.testing.assert_array_equal(batch['label'], np.arange(11) % 3)
  np.testing.assert_allclose(batch['inputs'][TRUNK_STATE]['hidden'], expected['hidden'],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(backbone.apply(backbone.params, batch['inputs']),
                             backbone.apply(backbone.params, ids), rtol=1e-5, atol=1e-6)
  assert cached.nbytes == trunk_cache.cache_bytes(backbone, ids, 11) + 11 * 4  # + labels


def test_a_cache_over_its_bound_is_refused_before_it_is_computed(tiny_bert_folder, monkeypatch):
  backbone = _tiny_backbone(tiny_bert_folder)
  monkeypatch.setattr(jax, 'jit', lambda *a, **k: pytest.fail('the trunk ran'))
  source = [{'text': b'a tweet', 'label': 0}] * 100
  transform = transforms.make_transform(backbone, 'text', 'label')
  with pytest.raises(ValueError, match=r'config.trunk_cache=True: the trunk outputs of 100 '
                                       r'training examples need .* GiB .*trunk_cache_max_gb'):
    trunk_cache.build(backbone, source, transform, batch_size=8, max_bytes=1000)


@pytest.mark.parametrize('overrides,message', [
    ({'model.adapted_blocks': 1, 'data.augment': True}, 'config.data.augment changes'),
    ({'model.adapted_blocks': 1, 'trunk_cache_max_gb': 0.}, 'trunk_cache_max_gb=0.0 must be'),
])
def test_a_config_without_a_deterministic_trunk_is_refused_before_heavy_work(
    overrides, message, tmp_path):
  config = tiny_train_config('', str(tmp_path / 'data'), trunk_cache=True, **overrides)
  with pytest.raises(ValueError, match=f'^config.trunk_cache=True: .*{message}'):
    train.run(config, str(tmp_path / 'w'), 'train')
  assert not os.path.exists(tmp_path / 'data')  # nothing was prepared


@pytest.mark.parametrize('method,adapted,message', [
    ('lora_ensemble', 1, 'lora_ensemble trains with the backbone\'s dropout'),
    ('batch_ensemble', -1, 'batch_ensemble trains with the backbone\'s dropout'),
])
def test_a_trunk_the_built_method_makes_random_or_empty_is_refused(tiny_bert_folder, method,
                                                                  adapted, message):
  from configs import default
  config = default.get_config()
  config.method, config.trunk_cache, config.model.adapted_blocks = method, True, adapted
  backbone = _tiny_backbone(tiny_bert_folder, adapted)
  setup = methods.build(method, backbone, config, jax.random.key(0))
  with pytest.raises(ValueError, match=message):
    trunk_cache.check(config, backbone, setup.dropout_in_training)


def test_a_backbone_without_a_block_stack_has_no_trunk_to_cache():
  from sve_jax.models.backbone import Backbone
  config = {'trunk_cache': True, 'trunk_cache_max_gb': 4., 'method': 'sve', 'model': {},
            'data': {}}
  with pytest.raises(ValueError, match='efficientnet_lite0 backbone has no stack'):
    trunk_cache.check(config, Backbone('efficientnet_lite0', None, {}, (), 'image'), False)
