"""train.py end to end: report, resume after SIGTERM, NaN loss, corrupt checkpoints, bad config."""
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
from sve_jax.train import checkpoint as ckpt
from sve_jax.train import sharding
from sve_jax.train import state as train_state

from conftest import ROOT

pytestmark = pytest.mark.e2e


def _trainables(workdir):
  trainables, _ = export.load_trainables(os.path.join(workdir, 'trainables.safetensors'))
  return trainables


def test_end_to_end_writes_the_promised_report_and_eval_mode_reproduces_it(
    tiny_bert_folder, shared_data_dir, tmp_path):
  config = tiny_train_config(tiny_bert_folder, shared_data_dir)
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
  assert {'auroc_msp', 'auroc_entropy', 'auroc_mi', 'fpr95_mi'} <= set(saved['ood'])
  assert saved['checkpoint']['trainables_file_bytes'] < saved['checkpoint']['backbone_bytes']
  assert os.path.getsize(os.path.join(workdir, 'reliability.png')) > 10_000
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert any('loss' in r for r in records) and any('val_accuracy' in r for r in records)
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


def test_chunks_end_at_every_multiple_and_every_counted_event():
  from sve_jax.train import loop
  from configs import default
  config = default.get_config()
  config.steps_per_execution, config.eval_every_steps, config.checkpoint.every_steps = 4, 7, 9
  total, per_epoch = 30, 11
  ends, step = [], 0
  while step < total:
    step = loop.chunk_end(step, config, total, per_epoch)
    ends.append(step)
  # Independent value: the sorted union of each interval's multiples up to the last step.
  expected = sorted({s for n in (4, 7, 9, 11) for s in range(n, total + 1, n)} | {total})
  assert ends == expected


def test_logged_throughput_of_a_multi_step_call_is_its_examples_over_its_time(
    tmp_path, monkeypatch):
  from sve_jax.train import loop
  from configs import default
  config = default.get_config()
  config.batch_size, config.log_every_steps = 8, 2
  clock = iter([100., 100., 104.])  # bar start, call start, call end: 4 steps in 4 s
  monkeypatch.setattr(loop.time, 'time', lambda: next(clock))
  progress = loop.Progress(config, str(tmp_path), step=0, total_steps=4)
  progress.start_call()
  metrics = {'loss': np.ones(4), 'grad_norm': np.ones(4)}
  assert loop.log_steps(metrics, 0, progress, steps_per_epoch=4, workdir=str(tmp_path)) == 4
  progress.bar.close()
  logged = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  # Steps 2 and 4 reach the host together; each log covers 2 steps × 8 examples in 2 s.
  assert [(r['step'], r['examples_per_sec']) for r in logged] == [(2, 8.), (4, 8.)]


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


def _toy_state(value):
  trainables = {'d': {'kernel': jnp.full((2, 3), value, jnp.float32)}}
  optimizer = train_state.make_optimizer(1e-3, total_steps=4)
  return train_state.create_train_state(trainables, optimizer, jax.random.key(0))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  checkpointer = ckpt.Checkpointer(str(tmp_path), keep=3)
  for step, value in ((1, 1.), (2, 2.)):
    state = _toy_state(value).replace(step=jnp.int32(step))
    checkpointer.save(state, {ckpt.DATA_ITERATOR: {'num_workers': 0,
                                                   'state': {'next_index': step}}})
  # Damage every data file of step 2.
  step_dir = os.path.join(str(tmp_path), 'checkpoints', 'latest', '2')
  for root, _, files in os.walk(step_dir):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\0garbage')
  abstract = jax.eval_shape(lambda: _toy_state(0.))
  restored, meta = checkpointer.restore_latest(abstract)
  assert int(restored.step) == 1
  assert ckpt.data_iterator_state(meta, 'latest/1', num_workers=0) == {'next_index': 1}
  np.testing.assert_array_equal(restored.trainables['d']['kernel'], 1.)
  assert 'unreadable' in caplog.text


def test_data_state_of_another_worker_count_or_pipeline_is_refused_by_name():
  saved = {ckpt.DATA_ITERATOR: {'num_workers': 2, 'state': {'next_index_in_cycle': 0}}}
  assert ckpt.data_iterator_state(saved, 'ckpt/4', 2) == {'next_index_in_cycle': 0}
  with pytest.raises(ckpt.CheckpointError, match='resume with --config.data.num_workers=2'):
    ckpt.data_iterator_state(saved, 'ckpt/4', 0)
  with pytest.raises(ckpt.CheckpointError, match='ckpt/4 was written by the input pipeline '
                     'before grain'):
    ckpt.data_iterator_state({'position': {'epoch': 0, 'step': 3}}, 'ckpt/4', 0)


def test_trainables_file_round_trips_and_rejects_another_backbone(tmp_path, tiny):
  import sve_jax
  _, params, _ = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 3)
  path = export.save_trainables(str(tmp_path / 't.safetensors'), trainables, {'M': 3}, frozen)
  loaded, meta = export.load_trainables(path, frozen)
  assert meta['M'] == 3
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.device_get(trainables))
  other = jax.tree_util.tree_map(lambda x: x * 2 if hasattr(x, 'shape') else x, params)
  other_frozen, _ = sve_jax.decompose(other)
  with pytest.raises(ckpt.CheckpointError, match='different frozen factors'):
    export.load_trainables(path, other_frozen)


@pytest.mark.parametrize('key,value,message', [
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
])
def test_bad_config_fails_before_heavy_work(key, value, message, tmp_path):
  config = tiny_train_config('', str(tmp_path / 'data'), **{key: value})
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    train.run(config, str(tmp_path / 'w'), 'train')
  assert not os.path.exists(tmp_path / 'data')  # nothing was prepared


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
    print('RESULT' + json.dumps({'devices': jax.device_count(), 'acc': results['test']['accuracy'],
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
  assert 'config.batch_size=12 is not divisible by the 8 data-parallel devices' in res[
      'divisible_error']
  assert os.path.exists(tmp_path / 'w8' / 'results.json')


def test_bfloat16_compute_dtype_is_close_to_float32(tiny_bert_folder):
  import sve_jax
  from sve_jax import models
  outputs = {}
  for dtype in ('float32', 'bfloat16'):
    backbone = models.load_backbone(
        {'name': 'bert', 'path': tiny_bert_folder, 'pooling': '', 'max_length': 16,
         'dtype': dtype, 'dropout_rate': -1}, num_classes=3)
    frozen, s = sve_jax.decompose(backbone.params, backbone.rules)
    trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 2, noise_std=0.5)
    inputs = backbone.tokenize(['a calm sea', 'the storm broke the mast at noon'])
    outputs[dtype] = np.asarray(sve_jax.make_sve_apply(backbone.apply)(
        {'frozen': frozen, 'trainables': trainables}, inputs), np.float32)
  assert outputs['bfloat16'].shape == (2, 2, 3)
  np.testing.assert_allclose(outputs['bfloat16'], outputs['float32'], atol=0.05)
  assert not np.array_equal(outputs['bfloat16'], outputs['float32'])  # really computed in bf16
