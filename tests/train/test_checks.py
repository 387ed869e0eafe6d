"""Config and workdir checks, made before any heavy work."""
import os

import pytest

import train
from conftest import tiny_train_config


# Run, recipe and method options alike.
@pytest.mark.parametrize('key,value,message', [
    ('head_init_std', -0.5, 'config.head_init_std=-0.5 must be >= 0, or -1'),
    ('optim.schedule', 'linear', "config.optim.schedule='linear' must be one of"),
    ('eval_every_steps', -1, 'config.eval_every_steps=-1 must be >= 0'),
    ('num_members', 0, 'config.num_members=0 must be >= 1'),
    ('optim.learning_rate', 0., 'config.optim.learning_rate=0.0 must be > 0'),
    ('data.num_workers', -1, r'config.data.num_workers=-1 must be >= 0'),
    ('steps_per_execution', 0, r'config.steps_per_execution=0 must be an integer >= 1'),
    ('data.name', 'no_such_data', "config.data.name='no_such_data'"),
    ('model.name', 'resnet', "config.model.name='resnet'"),
    ('model.path', '/no/such/checkpoint', "config.model.path='/no/such/checkpoint' does not exist"),
    ('execution', 'fast', "config.execution='fast'"),
    ('method', 'dropout', "config.method='dropout'"),
    ('model.dtype', 'float16', "config.model.dtype='float16'"),
    ('ensemble_mode', 'mean', r"config.ensemble_mode='mean' must be one of \('probs', "
                              r"'logits'\)"),
    ('optim.full_finetune_learning_rate', 0.,
     'config.optim.full_finetune_learning_rate=0.0 must be > 0, or -1'),
    ('lora_rank', 0, 'config.lora_rank=0 must be >= 1'),
    ('optim.lora_learning_rate', 0., 'config.optim.lora_learning_rate=0.0 must be > 0, or -1'),
    ('model.dropout_rate', 1.5, 'config.model.dropout_rate=1.5 must be'),
    ('laplace_prior_precisions', (1., -1.),
     r'config.laplace_prior_precisions=\(1.0, -1.0\) must be a non-empty list of prior '
     'precisions > 0'),
    ('posterior_fit_examples', 0, 'config.posterior_fit_examples=0 must be >= 1, or -1'),
    ('sve_targets', 'mlp', r"config.sve_targets='mlp' must be one of \('all', 'attention'\)"),
    ('model.adapted_blocks', 0, r'config.model.adapted_blocks=0 must be -1 \(all blocks\)'),
])
def test_bad_config_fails_before_heavy_work(key, value, message, tmp_path):
  config = tiny_train_config('', str(tmp_path / 'data'), **{key: value})
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    train.run(config, str(tmp_path / 'w'), 'train')
  assert not os.path.exists(tmp_path / 'data')  # nothing was prepared


@pytest.mark.parametrize('overrides,message', [
    ({'ood.name': '', 'ood.every_validation': True},
     r'config.ood.every_validation need an OOD set: set config.ood.name'),
    ({'ood.extra_names': ('no_such_set',)}, "config.ood.extra_names='no_such_set'"),
    ({'ood.extra_names': ('ood_text',)}, 'repeats a set'),
    ({'method': 'single_ft', 'model.adapted_blocks': 2},
     'config.model.adapted_blocks=2: single_ft trains every weight'),
])
def test_bad_ood_options_fail_before_heavy_work(overrides, message, tmp_path):
  config = tiny_train_config('', str(tmp_path / 'data'), **overrides)
  with pytest.raises(ValueError, match=message):
    train.run(config, str(tmp_path / 'w'), 'train')
  assert not os.path.exists(tmp_path / 'data')


@pytest.mark.parametrize('overrides,message', [
    ({'shift.corruptions': ('rain',)},
     r"^config.shift.corruptions: 'rain' is not a known corruption; choose from"),
    ({'shift.corruptions': ('fog', 'fog')}, r"^config.shift.corruptions=\('fog', 'fog'\) repeats"),
    ({'shift.severities': (0, 6)}, r'^config.shift.severities=\(0, 6\) must be distinct integers'),
    ({'shift.severities': ()}, r'^config.shift.severities=\(\) must be distinct integers'),
    ({'shift.max_examples': 0}, r'^config.shift.max_examples=0 must be >= 1, or -1'),
])
def test_bad_shift_options_fail_in_one_line_before_heavy_work(overrides, message, tmp_path):
  config = tiny_train_config('', str(tmp_path / 'data'), **{'shift.enabled': True, **overrides})
  with pytest.raises(ValueError, match=message) as raised:
    train.run(config, str(tmp_path / 'w'), 'train')
  assert '\n' not in str(raised.value)
  assert not os.path.exists(tmp_path / 'data')
