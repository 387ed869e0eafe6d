"""Orbax checkpoints: fallback to an older checkpoint, refusal of foreign data states."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax.train import checkpoint as ckpt
from sve_jax.train import state as train_state


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


def test_closing_a_checkpointer_that_never_saved_leaves_no_partial_save_behind(tmp_path):
  # A refused --mode=predict opens the workdir and exits at once: the clean-up orbax starts
  # when it opens must be over by close(), or the process exits in the middle of it.
  partial = tmp_path / 'checkpoints' / 'latest' / '7.orbax-checkpoint-tmp-1234'
  partial.mkdir(parents=True)
  (partial / 'array').write_bytes(b'half written')
  ckpt.Checkpointer(str(tmp_path)).close()
  assert os.listdir(tmp_path / 'checkpoints' / 'latest') == []


def test_a_checkpoint_from_before_an_identity_key_existed_reads_as_its_default():
  """Checkpoints written before ``adapted_blocks`` joined the identity adapted every block."""
  from sve_jax.train.checkpoint import _check_saved_identity
  old = {'identity': {'method': 'sve', 'num_members': 4}}
  _check_saved_identity(old, {'method': 'sve', 'num_members': 4, 'adapted_blocks': -1}, 'ck')
  with pytest.raises(ckpt.CheckpointError, match='adapted_blocks: checkpoint -1, this run 2'):
    _check_saved_identity(old, {'method': 'sve', 'num_members': 4, 'adapted_blocks': 2}, 'ck')
