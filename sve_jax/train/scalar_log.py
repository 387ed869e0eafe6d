"""The run's scalar log: one record per logged step, as JSON lines and as TensorBoard events.

Each record (``{'step': ..., 'epoch': ..., 'loss': ..., ...}`` or ``{'step': ..., 'val_nll':
..., ...}``) is appended to ``<workdir>/metrics.jsonl`` and written as TensorBoard scalars in
``<workdir>/tensorboard/`` (tensorboardX: no TensorFlow needed), so that
``tensorboard --logdir <workdir>`` shows the curves while the run trains. A record's keys
become tags: ``val_nll`` → ``val/nll``, ``loss`` → ``train/loss``; ``step`` and ``epoch``
index them.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import tensorboardX

METRICS_FILENAME = 'metrics.jsonl'
TENSORBOARD_DIRNAME = 'tensorboard'
_INDEX_KEYS = ('step', 'epoch')


def tag_for(key: str) -> str:
  """The TensorBoard tag of a record key: ``val_x`` → ``val/x``, anything else ``train/x``."""
  split, sep, name = key.partition('_')
  return f'{split}/{name}' if sep and split in ('val', 'ood') else f'train/{key}'


class ScalarLog:
  """Appends records to ``metrics.jsonl`` and TensorBoard (process 0 only: ``enabled``)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILENAME)
    self.enabled = enabled
    self._writer = None
    if enabled:
      self._writer = tensorboardX.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIRNAME),
                                                flush_secs=30)

  def write(self, record: Mapping[str, Any]) -> None:
    """Logs ``record`` (its ``step`` is required); non-numeric values go to the JSON only."""
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(dict(record)) + '\n')
    step = int(record['step'])
    for key, value in record.items():
      if key in _INDEX_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
        continue
      if math.isfinite(value):
        self._writer.add_scalar(tag_for(key), value, step)

  def close(self) -> None:
    """Flushes the TensorBoard events (the JSON lines are written as they come)."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
