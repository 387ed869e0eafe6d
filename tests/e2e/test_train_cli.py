"""train.py end to end: report, resume after SIGTERM, multi-step calls, grain workers, NaN loss,
the knobs of the recipe, the full fine-tuning methods, eight devices."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train
from conftest import tiny_train_config
from sve_jax import export
from sve_jax import models
from sve_jax import tree
from sve_jax.train import checkpoint as ckpt
from sve_jax.train import sharding
from conftest import ROOT


pytestmark = pytest.mark.e2e


def _trainables(workdir):
  trainables, _ = export.load_trainables(os.path.join(workdir, 'trainables.safetensors'))
  return trainables


def test_end_to_end_writes_the_promised_report_and_eval_mode_reproduces_it(
    tiny_bert_folder, shared_data_dir, tmp_path):
  # The OOD options on: scores at each validation, feature scores, a near-OOD set beside.
  config = tiny_train_config(tiny_bert_folder, shared_data_dir, **{
      'ood.every_validation': True, 'ood.max_examples_per_validation': 10,
      'ood.feature_scores': True, 'ood.extra_names': ('fortunes_text',)})
  workdir = str(tmp_path / 'run')
  results = train.run(config, workdir, 'train')
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['method'] == 'sve' and saved['num_members'] == 2
  for section in ('test', 'test_temperature_scaled'):
    assert set(saved[section]) == {'accuracy', 'nll', 'brier', 'ece', 'temperature'}
  assert set(saved['params']) == {'backbone', 'trainable_per_member', 'trainable_total',
                                  'overhead'}
  assert len(saved['members']) == 2 and set(saved['diversity']) == {'disagreement',
                                                                     'mutual_information'}
  assert saved['ood']['dataset'] == 'ood_text'
  feature_keys = {'auroc_mahalanobis', 'auroc_feature_disagreement'}
  assert {'auroc_msp', 'auroc_entropy', 'auroc_mi', 'fpr95_mi'} | feature_keys <= set(saved['ood'])
  assert list(saved['ood_sets']) == ['ood_text', 'fortunes_text']
  assert saved['ood_sets']['ood_text'] == {k: v for k, v in saved['ood'].items()
                                           if k != 'dataset'}
  assert feature_keys <= set(saved['ood_sets']['fortunes_text'])
  assert all(0. <= saved['ood'][k] <= 1. for k in feature_keys)
  assert saved['checkpoint']['trainables_file_bytes'] < saved['checkpoint']['backbone_bytes']
  assert os.path.getsize(os.path.join(workdir, 'reliability.png')) > 10_000
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert any('loss' in r for r in records) and any('val_accuracy' in r for r in records)
  validations = [r for r in records if 'val_accuracy' in r]
  assert all({'ood_auroc_msp', 'ood_auroc_entropy', 'ood_auroc_mi'} <= set(r)
             for r in validations)
  # 48 examples / batch 8 = 6 steps per epoch, 2 epochs.
  assert max(r['step'] for r in records) == 12
  again = train.run(config, workdir, 'eval')
  assert again['test'] == pytest.approx(results['test'])


@pytest.mark.parametrize('steps_per_execution,signal_call,stop_step', [(1, 5, 5), (4, 1, 4)])
def test_resume_after_sigterm_equals_an_uninterrupted_run(
    tiny_bert_folder, shared_data_dir, tmp_path, monkeypatch, steps_per_execution, signal_call,
    stop_step):
  # 12 steps, 6 per epoch: both stops are mid-epoch, where the data position matters.
  config = tiny_train_config(tiny_bert_folder, shared_data_dir,
                             **{'ood.name': '', 'steps_per_execution': steps_per_execution})
  straight = str(tmp_path / 'straight')
  train.run(config, straight, 'train')

  original = sharding.jit_train_step
  calls = {'n': 0}

  def interrupting_jit(*args, **kwargs):
    step = original(*args, **kwargs)

    def wrapped(*a):
      calls['n'] += 1
      if calls['n'] == signal_call:
        signal.raise_signal(signal.SIGTERM)
      return step(*a)

    return wrapped

  monkeypatch.setattr(sharding, 'jit_train_step', interrupting_jit)
  resumed = str(tmp_path / 'resumed')
  with pytest.raises(train.TrainingInterrupted, match=f'SIGTERM at step {stop_step}'):
    train.run(config, resumed, 'train')
  assert os.listdir(os.path.join(resumed, 'checkpoints', 'latest'))
  monkeypatch.setattr(sharding, 'jit_train_step', original)
  train.run(config, resumed, 'train')
  a, b = _trainables(straight), _trainables(resumed)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                         a, b)


def test_several_steps_per_call_train_as_one_step_per_call(tiny_bert_folder, shared_data_dir,
                                                           tmp_path):
  # eval_every_steps=5 cuts the 4-step chunks unevenly: calls end at 4, 5, 6, 8, 10, 12.
  runs = {}
  for k in (1, 4):
    config = tiny_train_config(tiny_bert_folder, shared_data_dir,
                               **{'ood.name': '', 'steps_per_execution': k,
                                  'eval_every_steps': 5})
    workdir = str(tmp_path / f'k{k}')
    train.run(config, workdir, 'train')
    records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
    runs[k] = (_trainables(workdir),
               {r['step']: r['loss'] for r in records if 'loss' in r},
               [r['step'] for r in records if 'val_accuracy' in r])
  (one, losses_one, vals_one), (four, losses_four, vals_four) = runs[1], runs[4]
  assert sorted(losses_one) == sorted(losses_four) == list(range(1, 13))  # every step logged
  np.testing.assert_allclose([losses_four[s] for s in range(1, 13)],
                             [losses_one[s] for s in range(1, 13)], rtol=1e-5)
  assert vals_one == vals_four == [5, 6, 10, 12]
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                         one, four)


def test_a_grain_worker_process_trains_exactly_as_in_process(tiny_bert_folder, shared_data_dir,
                                                            tmp_path):
  from absl import flags  # grain's workers read absl flags, parsed under train.py's app.run
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  trained = []
  for workers in (0, 1):  # 1: the source and transform (tokenizer, model) are pickled to it
    config = tiny_train_config(tiny_bert_folder, shared_data_dir,
                               **{'ood.name': '', 'data.num_workers': workers})
    train.run(config, str(tmp_path / f'workers{workers}'), 'train')
    trained.append(_trainables(str(tmp_path / f'workers{workers}')))
  jax.tree_util.tree_map(np.testing.assert_array_equal, *trained)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tiny_bert_folder, shared_data_dir, tmp_path, monkeypatch):
  config = tiny_train_config(tiny_bert_folder, shared_data_dir,
                             **{'ood.name': '', 'checkpoint.every_steps': 1})
  original = sharding.jit_train_step

  def poisoning_jit(*args, **kwargs):
    step = original(*args, **kwargs)

    def wrapped(state, frozen, batch):
      new_state, metrics = step(state, frozen, batch)
      if int(new_state.step) == 3:
        metrics = dict(metrics, loss=jnp.float32(np.nan))
      return new_state, metrics

    return wrapped

  monkeypatch.setattr(sharding, 'jit_train_step', poisoning_jit)
  workdir = str(tmp_path / 'nan')
  with pytest.raises(FloatingPointError, match='at step 3'):
    train.run(config, workdir, 'train')
  checkpointer = ckpt.Checkpointer(workdir)
  assert max(checkpointer.latest.all_steps()) == 2  # step 3 was never saved


EIGHT_DEVICES = textwrap.dedent('''
    import json, sys
    sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']
    import jax, train
    from conftest import tiny_train_config
    from sve_jax.train import sharding
    mesh = sharding.make_mesh(-1, 1)
    try:
      sharding.check_batch_divisible(12, mesh)
      divisible_error = ''
    except ValueError as e:
      divisible_error = str(e)
    config = tiny_train_config(sys.argv[2], sys.argv[3], **{'ood.name': '', 'num_epochs': 1})
    results = train.run(config, sys.argv[4], 'train')
    # The top block only, on cached trunk outputs, each member its own batches, members split
    # over 2 devices and the data over 4.
    cached = tiny_train_config(sys.argv[2], sys.argv[3], **{
        'ood.name': '', 'num_epochs': 1, 'model.adapted_blocks': 1, 'trunk_cache': True,
        'member_data_order': True, 'mesh.data': 4, 'mesh.member': 2})
    cached_results = train.run(cached, sys.argv[4] + '_cached', 'train')
    print('RESULT' + json.dumps({'devices': jax.device_count(), 'acc': results['test']['accuracy'],
                                 'cached_nll': cached_results['test']['nll'],
                                 'divisible_error': divisible_error}))
''')


def test_end_to_end_on_eight_simulated_devices(tiny_bert_folder, shared_data_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', EIGHT_DEVICES, ROOT, tiny_bert_folder,
                         shared_data_dir, str(tmp_path / 'w8')], env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads([l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1][6:])
  assert res['devices'] == 8 and 0. <= res['acc'] <= 1.
  assert 0. < res['cached_nll'] < 5.
  assert 'config.batch_size=12 is not divisible by the 8 data-parallel devices' in res[
      'divisible_error']
  assert os.path.exists(tmp_path / 'w8' / 'results.json')


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
