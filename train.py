r"""Trains and evaluates a Singular Value Ensemble (or a baseline) from an ml_collections config.

  python train.py --config=configs/default.py --workdir=workdir/default
  python train.py --config=configs/default.py --workdir=workdir/default --mode=eval
  python train.py --config=configs/default.py --workdir=w --config.num_members=8
  python train.py --config=configs/default.py --workdir=workdir/default --mode=predict \
      --input=new.csv --output=predictions.csv --target_accuracy=0.9

Rerunning the same command on an interrupted workdir resumes from its latest checkpoint.
Stages: validate config → mesh → data → backbone → decompose → shard + jit → train loop
(validation each epoch, best + latest checkpoints) → evaluate the best checkpoint → report
(results.json, report.html, reliability.png; metrics.jsonl and TensorBoard events as it trains).
``--mode=predict`` scores a file or image folder with a finished run's best checkpoint (or,
without one, its ``trainables.safetensors``).

A user's mistake (a bad option, file or workdir) prints one line, ``error: ...``, and exits
with status 2; a traceback means a bug (``SVE_TRACEBACK=1`` shows it for user errors too).
"""
from __future__ import annotations

import logging

from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections import config_flags

from sve_jax.train import user_errors
from sve_jax.train.loop import TrainingInterrupted
from sve_jax.train.predict import PredictRequest
from sve_jax.train.run import run

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and results go.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict'],
                          'train (then evaluate the best checkpoint), eval only, or predict '
                          '(score --input with a finished run).')
_INPUT = flags.DEFINE_string('input', None, 'predict: a CSV/TSV/JSONL file or image folder.')
_OUTPUT = flags.DEFINE_string('output', None, 'predict: the CSV of predictions to write.')
_TARGET_ACCURACY = flags.DEFINE_float(
    'target_accuracy', None, 'predict: flag rows for review so that the rest reach this '
    'accuracy on the validation split.')
_TARGET_COVERAGE = flags.DEFINE_float(
    'target_coverage', None, 'predict: flag rows for review so that this fraction is answered '
    'on the validation split (default 0.9 when neither target is given).')


def main(argv):
  del argv
  # Our own milestones at INFO; orbax's per-save chatter only from WARNING up.
  absl_logging.set_verbosity(absl_logging.INFO)
  for noisy in ('orbax', 'absl'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  if _WORKDIR.value is None:
    user_errors.fail('--workdir is required')
  if _CONFIG.value is None:
    user_errors.fail('--config is required (e.g. --config=configs/default.py)')
  request = None
  if _MODE.value == 'predict':
    request = PredictRequest(_INPUT.value or '', _OUTPUT.value or '', _TARGET_ACCURACY.value,
                             _TARGET_COVERAGE.value)
  try:
    run(_CONFIG.value, _WORKDIR.value, _MODE.value, request)
  except TrainingInterrupted as e:
    print(e)
    raise SystemExit(130)


if __name__ == '__main__':
  jax.config.config_with_absl()
  user_errors.run_cli(main)
