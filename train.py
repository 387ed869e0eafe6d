r"""Trains and evaluates a Singular Value Ensemble (or a baseline) from an ml_collections config.

  python train.py --config=configs/default.py --workdir=workdir/default
  python train.py --config=configs/default.py --workdir=workdir/default --mode=eval
  python train.py --config=configs/default.py --workdir=w --config.num_members=8

Rerunning the same command on an interrupted workdir resumes from its latest checkpoint.
Stages: validate config → mesh → data → backbone → decompose → shard + jit → train loop
(validation each epoch, best + latest checkpoints) → evaluate the best checkpoint → report.
"""
from __future__ import annotations

import logging

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections import config_flags

from sve_jax.train.loop import TrainingInterrupted
from sve_jax.train.run import run

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and results go.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                          'train (then evaluate the best checkpoint) or eval only.')


def main(argv):
  del argv
  # Our own milestones at INFO; orbax's per-save chatter only from WARNING up.
  absl_logging.set_verbosity(absl_logging.INFO)
  for noisy in ('orbax', 'absl'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  if _WORKDIR.value is None:
    raise app.UsageError('--workdir is required')
  try:
    run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except TrainingInterrupted as e:
    print(e)
    raise SystemExit(130)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
