r"""Every method on one config, several seeds, through train.py's own code path.

  python -m benchmarks.quality --config=configs/default.py --seeds=3 --workdir=workdir/quality
  python -m benchmarks.quality --config=configs/default.py --seeds=1 \
      --methods=sve,single_svf --config.data.max_train_examples=800

Each (method, seed) is one :func:`sve_jax.train.run.run` in ``--workdir/<method>/seed_<k>``
(default ``workdir/quality``) (an interrupted benchmark resumes: finished runs are read back,
unfinished ones resume from their checkpoints). Writes ``benchmarks/results/quality.json`` and prints the Markdown table that
BENCHMARKS.md records: mean ± std over seeds per method.
"""
from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
import numpy as np

import train  # pylint: disable=unused-import  # Defines --config and --workdir.
from sve_jax import methods
from sve_jax.train import run as run_lib

# --config and --workdir are train.py's flags (the base config, and the root of the runs).
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per method.')
_METHODS = flags.DEFINE_list('methods', list(methods.METHODS), 'Methods to compare.')
_SUMMARY = flags.DEFINE_string('summary', 'benchmarks/results/quality.json', 'Summary JSON.')

COLUMNS = (
    ('accuracy', ('test', 'accuracy')), ('nll', ('test', 'nll')),
    ('brier', ('test', 'brier')), ('ece', ('test', 'ece')),
    ('nll_ts', ('test_temperature_scaled', 'nll')), ('ece_ts', ('test_temperature_scaled', 'ece')),
    ('auroc_mi', ('ood', 'auroc_mi')), ('auroc_msp', ('ood', 'auroc_msp')),
)


def _get(results, keys):
  for key in keys:
    results = results.get(key) if isinstance(results, dict) else None
  return results


def run_one(config, method: str, seed: int, workdir: str) -> dict:
  """Trains and evaluates one (method, seed); reuses a finished run's results.json."""
  path = os.path.join(workdir, 'results.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  config = config.copy_and_resolve_references()
  config.method = method
  config.seed = seed
  # One prepared copy of the data for every run.
  config.data.data_dir = config.data.data_dir or os.path.join(_root(), 'tfds_data')
  t0 = time.time()
  results = run_lib.run(config, workdir, 'train')
  results['train_time_s'] = time.time() - t0
  with open(path, 'w') as f:  # add the wall time to the run's own report
    json.dump(results, f, indent=2)
  return results


def _learning_rate(results: dict) -> float | None:
  """The peak learning rate of a run (recorded by the run's report; older runs: the config's)."""
  if 'learning_rate' in results:
    return results['learning_rate']
  return _get(results, ('config', 'optim', 'learning_rate'))


def summarise(runs: dict[str, list[dict]],
              columns: tuple[tuple[str, tuple[str, ...]], ...] = COLUMNS) -> dict[str, dict]:
  """Mean and std over seeds of each of ``columns`` (name, key path) and the wall time, per
  method (or per named setting: benchmarks/sweep.py)."""
  summary = {}
  for method, results in runs.items():
    row = {'num_members': results[0]['num_members'],
           'trainable_total': results[0]['params']['trainable_total'],
           'overhead': results[0]['params']['overhead'], 'seeds': len(results),
           'learning_rate': _learning_rate(results[0])}
    for name, keys in columns + (('train_time_s', ('train_time_s',)),):
      values = [v for v in (_get(r, keys) for r in results) if v is not None]
      if values:
        row[name] = {'mean': float(np.mean(values)), 'std': float(np.std(values))}
    summary[method] = row
  return summary


def markdown_table(summary: dict[str, dict]) -> str:
  header = ['method', 'M', 'trainable', 'lr', 'acc', 'NLL', 'Brier', 'ECE', 'NLL (TS)',
            'ECE (TS)', 'AUROC MI', 'AUROC MSP', 'train s']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for method, row in summary.items():
    lr = row.get('learning_rate')
    cells = [method, str(row['num_members']), f"{row['trainable_total']:,}",
             f'{lr:g}' if lr is not None else '–']
    for name in ('accuracy', 'nll', 'brier', 'ece', 'nll_ts', 'ece_ts', 'auroc_mi',
                 'auroc_msp', 'train_time_s'):
      stat = row.get(name)
      fmt = '{:.0f}' if name == 'train_time_s' else '{:.4f}'
      if row.get('seeds', 1) > 1:  # one seed has no spread to show
        fmt = f'{fmt} ± {fmt}'
      cells.append(fmt.format(stat['mean'], stat['std']) if stat else '–')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _root() -> str:
  return flags.FLAGS.workdir or 'workdir/quality'


def write_summary(config, runs: dict[str, list[dict]]) -> dict[str, dict]:
  """Writes --summary from the runs finished so far and returns the per-method summary."""
  summary = summarise({m: r for m, r in runs.items() if r})
  total = sum(r.get('train_time_s', 0.0) for results in runs.values() for r in results)
  os.makedirs(os.path.dirname(os.path.abspath(_SUMMARY.value)), exist_ok=True)
  with open(_SUMMARY.value, 'w') as f:
    json.dump({'config': json.loads(config.to_json_best_effort()),
               'seeds': _SEEDS.value, 'total_run_time_s': total, 'methods': summary},
              f, indent=2)
  return summary


def main(argv):
  del argv
  config = flags.FLAGS.config
  runs = {method: [] for method in _METHODS.value}
  # Seed-major, so a stopped benchmark already has every method at the first seeds; the
  # summary is rewritten after each run.
  for seed in range(_SEEDS.value):
    for method in _METHODS.value:
      workdir = os.path.join(_root(), method, f'seed_{seed}')
      runs[method].append(run_one(config, method, seed, workdir))
      summary = write_summary(config, runs)
  print(markdown_table(summary))


if __name__ == '__main__':
  app.run(main)
