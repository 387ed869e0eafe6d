r"""Robustness under corruption per method: accuracy and ECE against severity, over seeds.

  python -m benchmarks.quality --config=configs/fmnist_efficientnet_lite0.py --seeds=3 \
      --workdir=workdir/quality_fmnist --summary=benchmarks/results/quality_fmnist.json \
      --config.shift.enabled=True
  python -m benchmarks.shift --runs=workdir/quality_fmnist --name=fmnist

Reads the ``shift`` section (``config.shift.enabled``; :mod:`sve_jax.eval.shift`) of every
finished run's results.json under ``--runs`` (``<method>/seed_<k>/results.json``, as
``benchmarks.quality`` lays them out). Each run's curve is its mean over corruptions at each
severity (0 = the clean subset); per method, the mean and std of those curves over seeds go to
``<out_dir>/shift_<name>.json`` and the means to ``shift_<name>.png`` (accuracy and ECE
against severity, one line per method). ``benchmarks.quality`` writes the same files itself,
named after its ``--summary``, when its runs carry a ``shift`` section.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Mapping, Sequence

from absl import flags
import numpy as np

from sve_jax.eval import shift as shift_lib
from sve_jax.train import user_errors

_RUNS = flags.DEFINE_string('runs', 'workdir/quality',
                            'Root of the runs: <method>/seed_<k>/results.json.')
_NAME = flags.DEFINE_string('name', 'quality', 'Writes shift_<name>.json and .png.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/results', 'Where they go.')


def read_runs(root: str) -> dict[str, list[dict]]:
  """``{method: [results.json, ...]}`` of the runs under ``root`` that have a ``shift``
  section, methods and seeds in name order."""
  runs: dict[str, list[dict]] = {}
  for path in sorted(glob.glob(os.path.join(root, '*', 'seed_*', 'results.json'))):
    with open(path) as f:
      results = json.load(f)
    if 'shift' in results:
      runs.setdefault(os.path.basename(os.path.dirname(os.path.dirname(path))), []).append(
          results)
  return runs


def method_curve(runs: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, dict[str, float]]]:
  """Per severity (0 = clean) and score, the ``mean`` and ``std`` over ``runs`` (seeds) of
  each run's mean over corruptions (:func:`shift_lib.shift_curves`)."""
  curves = [shift_lib.shift_curves(r['shift'])[shift_lib.MEAN_LABEL] for r in runs]
  severities = sorted(set.intersection(*(set(c) for c in curves)))
  return {s: {key: {'mean': float(np.mean([c[s][key] for c in curves])),
                    'std': float(np.std([c[s][key] for c in curves]))}
              for key in shift_lib.KEYS} for s in severities}


def summarise(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
  """Per method with shift sections: seeds, corruptions, test examples and
  :func:`method_curve`."""
  summary = {}
  for method, results in runs.items():
    results = [r for r in results if 'shift' in r]
    if results:
      summary[method] = {'seeds': len(results),
                         'corruptions': sorted(results[0]['shift']['corruptions']),
                         'num_examples': results[0]['shift']['num_examples'],
                         'curve': method_curve(results)}
  return summary


def markdown_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
  """Accuracy and ECE of each method, clean then per severity (means over seeds)."""
  severities = sorted(set().union(*(row['curve'] for row in summary.values())))
  names = ['clean' if s == 0 else f's{s}' for s in severities]
  header = (['method', 'seeds'] + [f'acc {n}' for n in names] + [f'ECE {n}' for n in names])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for method, row in summary.items():
    cells = [f"{row['curve'][s][key]['mean']:.4f}" if s in row['curve'] else '–'
             for key in ('accuracy', 'ece') for s in severities]
    lines.append('| ' + ' | '.join([method, str(row['seeds'])] + cells) + ' |')
  return '\n'.join(lines)


def write_shift(runs: Mapping[str, Sequence[Mapping[str, Any]]], name: str,
                out_dir: str) -> dict[str, dict[str, Any]]:
  """Writes ``out_dir/shift_<name>.json`` (:func:`summarise`) and ``shift_<name>.png`` (one
  line per method); returns the summary (``{}``, nothing written, without shift sections)."""
  summary = summarise(runs)
  if not summary:
    return summary
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, f'shift_{name}')
  with open(stem + '.json', 'w') as f:
    json.dump({'name': name, 'methods': summary}, f, indent=2)
  seeds = sorted({row['seeds'] for row in summary.values()})
  shift_lib.plot_shift(
      stem + '.png',
      {method: {s: {k: v['mean'] for k, v in scores.items()} for s, scores in row['curve'].items()}
       for method, row in summary.items()},
      f"{name}: mean over corruptions, {'/'.join(map(str, seeds))} seed(s) per method")
  return summary


def main(argv):
  del argv
  summary = write_shift(read_runs(_RUNS.value), _NAME.value, _OUT_DIR.value)
  if not summary:
    raise SystemExit(f'no results.json with a shift section under {_RUNS.value}/*/seed_*/ '
                     '(run with --config.shift.enabled=True)')
  print(markdown_table(summary))


if __name__ == '__main__':
  user_errors.run_cli(main)
