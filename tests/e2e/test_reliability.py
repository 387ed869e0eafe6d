"""Reliability of train.py at the scale users run it.

Real multi-process runs (two ``train.py`` processes, ``jax.distributed`` over localhost, gloo
collectives) against one process with as many simulated devices; SIGKILL after and during a
checkpoint write, restarted with the same command; time-based checkpoints; workdir problems
(unwritable, another run's checkpoints, a disk that fills during a save).
"""
import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import train
from sve_jax.train import loop
from sve_jax.train import run as run_lib
from conftest import ROOT, tiny_train_argv, tiny_train_config
from sve_jax import export
from sve_jax.train import checkpoint as ckpt

pytestmark = pytest.mark.e2e

LAUNCHER = os.path.join(ROOT, 'tests', 'launch_train.py')
TIMEOUT_S = 600


# ---------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------


def _env(devices: int, **extra) -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', **extra)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _run(argv, env, launcher=False):
  """Runs ``python [launcher] train.py ...``; returns the CompletedProcess."""
  return subprocess.run([sys.executable] + ([LAUNCHER] if launcher else []) + argv, env=env,
                        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)


def _run_two_processes(argv, workdir, writes_dir):
  """Two processes of ``argv`` on localhost, 2 CPU devices each; returns their outputs."""
  port = _free_port()
  procs = []
  for i in range(2):
    flags = [f'--config.distributed.coordinator_address=localhost:{port}',
             '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}',
             f'--workdir={workdir}']
    env = _env(2, SVE_TEST_WRITES_LOG=os.path.join(writes_dir, f'writes{i}.json'))
    procs.append(subprocess.Popen([sys.executable, LAUNCHER] + argv + flags, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=ROOT))
  outputs = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=TIMEOUT_S)
      outputs.append((proc.returncode, out, err))
  finally:
    for proc in procs:  # one failed: the other would wait for it at a collective
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  for i, (code, _, err) in enumerate(outputs):
    assert code == 0, f'process {i} failed:\n{err[-4000:]}'
  return outputs


def _losses(workdir):
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [(r['step'], r['loss']) for r in records if 'loss' in r]


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def _trainables(workdir):
  trainables, _ = export.load_trainables(os.path.join(workdir, 'trainables.safetensors'))
  return trainables


def _assert_same_run(workdir, reference):
  """Same trainables and test metrics (float tolerance) as the reference run."""
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                         _trainables(workdir), _trainables(reference))
  assert _results(workdir)['test'] == pytest.approx(_results(reference)['test'],
                                                    rel=1e-5, abs=1e-6)
  # Temperature scaling minimises a validation NLL that is flat near its minimum (float32,
  # tiny data): logits that agree to 1e-6 can move the argmin T by ~1% while the minimum
  # itself does not move. So the NLL reached is compared tightly and T loosely; ECE and Brier
  # after scaling follow T to first order (ECE also through its bins).
  ours = _results(workdir)['test_temperature_scaled']
  theirs = _results(reference)['test_temperature_scaled']
  assert ours['accuracy'] == pytest.approx(theirs['accuracy'], abs=1e-6)
  assert ours['nll'] == pytest.approx(theirs['nll'], rel=1e-3)
  assert ours['temperature'] == pytest.approx(theirs['temperature'], rel=2e-2)
  assert ours['brier'] == pytest.approx(theirs['brier'], abs=2e-3)
  assert ours['ece'] == pytest.approx(theirs['ece'], abs=5e-3)


# ---------------------------------------------------------------------------------------------
# Two real processes against one process with four devices.
# ---------------------------------------------------------------------------------------------

# A few steps, tiny eval: the processes' startup dominates.
MULTI = {'ood.name': '', 'num_epochs': 1, 'max_steps': 3}


@pytest.fixture(scope='module')
def one_process_run(tiny_bert_folder, shared_data_dir, tmp_path_factory):
  """Workdir of one process with 4 simulated devices, ``mesh.data=4``."""
  workdir = str(tmp_path_factory.mktemp('one_process') / 'run')
  argv = tiny_train_argv(tiny_bert_folder, shared_data_dir, **MULTI, **{'mesh.data': 4})
  proc = _run(argv + [f'--workdir={workdir}'], _env(4))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


@pytest.mark.parametrize('data,member', [(4, 1), (2, 2)])
def test_two_processes_match_one_process_with_four_devices(
    data, member, one_process_run, tiny_bert_folder, shared_data_dir, tmp_path):
  argv = tiny_train_argv(tiny_bert_folder, shared_data_dir, **MULTI,
                         **{'mesh.data': data, 'mesh.member': member})
  workdir = str(tmp_path / 'two_processes')
  outputs = _run_two_processes(argv, workdir, str(tmp_path))
  # Same losses step by step, each step logged once (process 0 alone appends).
  ours, reference = _losses(workdir), _losses(one_process_run)
  assert [s for s, _ in ours] == [1, 2, 3] == [s for s, _ in reference]
  np.testing.assert_allclose([l for _, l in ours], [l for _, l in reference], rtol=1e-5)
  _assert_same_run(workdir, one_process_run)
  # Only process 0 writes the report (the summary table too).
  report_files = {os.path.join(workdir, n) for n in ('results.json', 'reliability.png',
                                                     'metrics.jsonl')}
  for i in range(2):
    with open(tmp_path / f'writes{i}.json') as f:
      written = report_files & set(json.load(f))
    assert written == (report_files if i == 0 else set()), (i, written)
  assert 'test (raw)' in outputs[0][1] and 'test (raw)' not in outputs[1][1]

  if (data, member) == (2, 2):
    # What two processes wrote, one process restores in another layout (mesh.data=4) ...
    os.remove(os.path.join(workdir, 'results.json'))
    argv = tiny_train_argv(tiny_bert_folder, shared_data_dir, **MULTI, **{'mesh.data': 4})
    proc = _run(argv + ['--mode=eval', f'--workdir={workdir}'], _env(4))
    assert proc.returncode == 0, proc.stderr[-4000:]
  else:
    # ... and what one process wrote (mesh.data=4), two processes restore with data=2, member=2.
    workdir = str(tmp_path / 'copied')
    shutil.copytree(os.path.join(one_process_run, 'checkpoints'),
                    os.path.join(workdir, 'checkpoints'))
    argv = tiny_train_argv(tiny_bert_folder, shared_data_dir, **MULTI,
                           **{'mesh.data': 2, 'mesh.member': 2})
    _run_two_processes(argv + ['--mode=eval'], workdir, str(tmp_path))
  _assert_same_run(workdir, one_process_run)


# ---------------------------------------------------------------------------------------------
# SIGKILL after and during a checkpoint write.
# ---------------------------------------------------------------------------------------------

# 48 examples / batch 8 = 6 steps an epoch, 12 in all; saves at 4 (mid-epoch), 6, 8, 12.
KILLED = {'ood.name': '', 'checkpoint.every_steps': 4}


@pytest.fixture(scope='module')
def uninterrupted_run(tiny_bert_folder, shared_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted') / 'run')
  argv = tiny_train_argv(tiny_bert_folder, shared_data_dir, **KILLED)
  proc = _run(argv + [f'--workdir={workdir}'], _env(1))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def _committed_steps(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints', 'latest'))
                if n.isdigit())


def _partial_saves(workdir):
  return [n for n in os.listdir(os.path.join(workdir, 'checkpoints', 'latest'))
          if 'orbax-checkpoint-tmp' in n]


@pytest.mark.parametrize('asynchronous,hook,step,committed_before_restart', [
    (True, 'SVE_TEST_KILL_AFTER_SAVE', 4, [4]),   # right after a mid-epoch save
    (True, 'SVE_TEST_KILL_IN_SAVE', 8, [4, 6]),   # during an asynchronous write
    (False, 'SVE_TEST_KILL_IN_SAVE', 8, [4, 6]),  # during a synchronous write
])
def test_sigkill_then_the_same_command_equals_an_uninterrupted_run(
    asynchronous, hook, step, committed_before_restart, uninterrupted_run, tiny_bert_folder,
    shared_data_dir, tmp_path):
  argv = tiny_train_argv(tiny_bert_folder, shared_data_dir, **KILLED,
                         **{'checkpoint.asynchronous': asynchronous})
  argv += [f'--workdir={tmp_path / "run"}']
  killed = _run(argv, _env(1, **{hook: str(step)}), launcher=True)
  assert killed.returncode == -9, killed.stderr[-4000:]  # SIGKILL, not a clean exit
  workdir = str(tmp_path / 'run')
  assert _committed_steps(workdir) == committed_before_restart
  if hook == 'SVE_TEST_KILL_IN_SAVE':
    assert _partial_saves(workdir)  # the kill landed mid-write: step 8 is half written
  restarted = _run(argv, _env(1))
  assert restarted.returncode == 0, restarted.stderr[-4000:]
  assert f'resumed at step {committed_before_restart[-1]}' in restarted.stderr
  assert not _partial_saves(workdir)
  _assert_same_run(workdir, uninterrupted_run)


# ---------------------------------------------------------------------------------------------
# Time-based checkpoints.
# ---------------------------------------------------------------------------------------------


def test_wall_time_due_after_the_interval_only(monkeypatch):
  monkeypatch.setattr(ckpt.time, 'monotonic', lambda: 1000.)
  assert ckpt.wall_time_due(last_save=1000. - 599., every_minutes=10) is False
  assert ckpt.wall_time_due(last_save=1000. - 600., every_minutes=10) is True
  assert ckpt.wall_time_due(last_save=0., every_minutes=0) is False  # 0 disables


def test_every_minutes_saves_mid_epoch_without_every_steps(tiny_bert_folder, shared_data_dir,
                                                          tmp_path, monkeypatch):
  clock = {'now': 0.}

  def tick():  # each call is 4 simulated minutes later
    clock['now'] += 240.
    return clock['now']

  monkeypatch.setattr(ckpt.time, 'monotonic', tick)
  monkeypatch.setattr(loop.time, 'monotonic', tick)
  config = tiny_train_config(tiny_bert_folder, shared_data_dir, **{
      'ood.name': '', 'num_epochs': 1, 'checkpoint.every_minutes': 10.,
      'checkpoint.keep': 10})
  train.run(config, str(tmp_path / 'run'), 'train')
  steps = ckpt.Checkpointer(str(tmp_path / 'run')).latest.all_steps()
  # 6 steps in the epoch: time-based saves land mid-epoch, plus the end-of-epoch one.
  assert 6 in steps and any(0 < s < 6 for s in steps), steps


# ---------------------------------------------------------------------------------------------
# Workdir problems.
# ---------------------------------------------------------------------------------------------


def test_unwritable_workdir_fails_before_heavy_work(tiny_bert_folder, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  config = tiny_train_config(tiny_bert_folder, str(tmp_path / 'data'))
  with pytest.raises(OSError, match=f'--workdir={blocker}/run is not writable'):
    train.run(config, str(blocker / 'run'), 'train')
  assert not os.path.exists(tmp_path / 'data')  # no data prepared


@pytest.fixture(scope='module')
def short_run(tiny_bert_folder, shared_data_dir, tmp_path_factory):
  """A workdir holding the checkpoints of a 2-step SVE run with M = 2."""
  workdir = str(tmp_path_factory.mktemp('short') / 'run')
  config = tiny_train_config(tiny_bert_folder, shared_data_dir,
                             **{'ood.name': '', 'max_steps': 2})
  train.run(config, workdir, 'train')
  return workdir


@pytest.mark.parametrize('change,message', [
    ({'num_members': 3}, 'num_members: checkpoint 2, this run 3'),
    ({'method': 'single_svf'}, "method: checkpoint 'sve', this run 'single_svf'"),
    ({'model.path': 'OTHER'}, 'model_path: checkpoint'),
    ({'model.adapted_blocks': 1}, 'adapted_blocks: checkpoint -1, this run 1'),
])
def test_workdir_of_another_run_is_refused_by_name(change, message, short_run,
                                                   tiny_bert_folder, shared_data_dir,
                                                   tmp_path, monkeypatch):
  if change.get('model.path') == 'OTHER':  # another backbone folder
    change = {'model.path': shutil.copytree(tiny_bert_folder, str(tmp_path / 'other_bert'))}
  loaded = []
  monkeypatch.setattr(run_lib, 'load_data', lambda *a: loaded.append(1))
  config = tiny_train_config(tiny_bert_folder, shared_data_dir,
                             **{'ood.name': '', 'max_steps': 2, **change})
  with pytest.raises(ckpt.CheckpointError, match='belongs to another run') as raised:
    train.run(config, short_run, 'train')
  assert message in str(raised.value) and 'fresh --workdir' in str(raised.value)
  assert not loaded  # refused before the data or the backbone are loaded


@pytest.mark.parametrize('asynchronous', [True, False])
def test_disk_full_during_a_save_explains_and_keeps_the_previous_checkpoint(
    asynchronous, tiny_bert_folder, shared_data_dir, tmp_path, monkeypatch, caplog):
  from orbax.checkpoint._src.path import atomicity
  caplog.set_level(logging.INFO)
  commit = atomicity.AtomicRenameTemporaryPath.finalize

  async def disk_fills_at_step_2(self, *args, **kwargs):
    # Step 2's files are written; the last write of its save (the commit) finds no space.
    if self.get_final().name == '2':
      raise OSError(errno.ENOSPC, 'No space left on device', str(self.get()))
    return await commit(self, *args, **kwargs)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', disk_fills_at_step_2)
  config = tiny_train_config(tiny_bert_folder, shared_data_dir, **{
      'ood.name': '', 'max_steps': 4, 'checkpoint.every_steps': 1,
      'checkpoint.asynchronous': asynchronous})
  workdir = str(tmp_path / 'run')
  with pytest.raises(ckpt.CheckpointError) as raised:
    train.run(config, workdir, 'train')
  message = str(raised.value)
  assert 'the disk is full' in message and 'checkpoints/latest' in message
  assert 'Earlier checkpoint(s) [1] are intact' in message
  # Step 1 is usable: the same config, disk freed, resumes from it and finishes.
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', commit)
  train.run(config, workdir, 'train')
  assert 'resumed at step 1' in caplog.text
  assert max(ckpt.Checkpointer(workdir).latest.all_steps()) == 4
