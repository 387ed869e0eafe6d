"""The scalar log: metrics.jsonl lines and TensorBoard events, read back independently."""
import json
import os

from tensorboard.backend.event_processing import event_accumulator

from sve_jax.train import scalar_log


def test_records_reach_jsonl_and_tensorboard_events_with_their_steps(tmp_path):
  log = scalar_log.ScalarLog(str(tmp_path))
  log.write({'step': 2, 'epoch': 0, 'loss': 1.25, 'grad_norm': 0.5})
  log.write({'step': 4, 'epoch': 0, 'loss': 0.75, 'grad_norm': 0.25})
  log.write({'step': 4, 'epoch': 0, 'val_nll': 0.6, 'val_accuracy': 0.7, 'val_note': 'x'})
  log.close()
  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  assert lines[2] == {'step': 4, 'epoch': 0, 'val_nll': 0.6, 'val_accuracy': 0.7,
                      'val_note': 'x'}
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  assert set(events.Tags()['scalars']) == {'train/loss', 'train/grad_norm', 'val/nll',
                                           'val/accuracy'}
  assert [(e.step, e.value) for e in events.Scalars('train/loss')] == [(2, 1.25), (4, 0.75)]
  assert [(e.step, round(e.value, 6)) for e in events.Scalars('val/nll')] == [(4, 0.6)]


def test_a_disabled_log_writes_nothing(tmp_path):
  log = scalar_log.ScalarLog(str(tmp_path), enabled=False)
  log.write({'step': 1, 'loss': 1.})
  log.close()
  assert os.listdir(tmp_path) == []


def test_tags_group_validation_and_ood_apart_from_training():
  assert scalar_log.tag_for('val_nll') == 'val/nll'
  assert scalar_log.tag_for('ood_auroc_mi') == 'ood/auroc_mi'
  assert scalar_log.tag_for('examples_per_sec') == 'train/examples_per_sec'
