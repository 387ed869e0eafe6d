r"""Every method on one config, several seeds, through train.py's own code path.

  python -m benchmarks.quality --config=configs/default.py --seeds=3 --workdir=workdir/quality
  python -m benchmarks.quality --config=configs/default.py --seeds=1 \
      --methods=sve,single_svf --config.data.max_train_examples=800

Each (method, seed) is one :func:`sve_jax.train.run.run` in ``--workdir/<method>/seed_<k>``
(default ``workdir/quality``) (an interrupted benchmark resumes: finished runs are read back,
unfinished ones resume from their checkpoints). Writes ``benchmarks/results/quality.json``
and prints the Markdown table that BENCHMARKS.md records: mean ± std over seeds per method. With ``--config.shift.enabled=True``
the runs are also scored under corruption, and ``benchmarks.shift`` writes
``shift_<summary name>.json`` and ``.png`` beside the summary (accuracy and ECE against
severity, one line per method).

Seeds can be run apart, e.g. on two machines, and pooled exactly into one summary:

  python -m benchmarks.quality --config=configs/default.py --methods=laplace_lora \
      --first_seed=1 --seeds=2 --pool_with=benchmarks/results/quality_laplace_lora.json \
      --summary=benchmarks/results/quality_laplace_lora.json

``--pool_with`` refuses a summary trained from another base config, or holding the same seeds.

``--recipe_from=<a benchmarks.sweep summary>`` sets each family's learning rate to the one its
sweep chose on validation (``benchmarks/recipe.py``), e.g. after ``--grid=recipe``:

  python -m benchmarks.quality --config=configs/fmnist_dinov2_vits14.py --seeds=3 \
      --recipe_from=benchmarks/results/sweep_recipe_fmnist_dinov2.json
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Mapping, Sequence

from absl import flags
from absl import logging
import numpy as np

import train  # pylint: disable=unused-import  # Defines --config and --workdir.
from benchmarks import recipe
from benchmarks import shift as shift_bench
from sve_jax import methods
from sve_jax.train import run as run_lib
from sve_jax.train import user_errors

# --config and --workdir are train.py's flags (the base config, and the root of the runs).
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per method.')
_METHODS = flags.DEFINE_list('methods', list(methods.METHODS), 'Methods to compare.')
_SUMMARY = flags.DEFINE_string('summary', 'benchmarks/results/quality.json', 'Summary JSON.')
_FIRST_SEED = flags.DEFINE_integer('first_seed', 0, 'Runs seeds first_seed, …, '
                                   'first_seed + seeds - 1.')
_POOL_WITH = flags.DEFINE_string(
    'pool_with', '', 'A saved summary of other seeds of the same base config (e.g. an earlier '
    '--summary): its rows are pooled with this invocation\'s, per method, into --summary.')
_RECIPE_FROM = flags.DEFINE_string(
    'recipe_from', '', 'A sweep summary (benchmarks.sweep --sweep_out .json) of the same base '
    'config: each family\'s rate of lowest validation NLL replaces the config\'s.')

#: Base-config keys that say where data lies or what is evaluated, not what is trained: two
#: summaries that differ only in these may be pooled (and a sweep's rows kept).
TRAINING_NEUTRAL_KEYS = ('ood', 'shift', 'eval_batch_size', 'data.data_dir')

COLUMNS = (
    ('accuracy', ('test', 'accuracy')), ('nll', ('test', 'nll')),
    ('brier', ('test', 'brier')), ('ece', ('test', 'ece')),
    ('nll_ts', ('test_temperature_scaled', 'nll')), ('ece_ts', ('test_temperature_scaled', 'ece')),
    ('auroc_mi', ('ood', 'auroc_mi')), ('auroc_msp', ('ood', 'auroc_msp')),
    # Selective prediction: area under the risk-coverage curve by max probability (lower is
    # better; results.json's selective section).
    ('aurc', ('selective', 'msp', 'aurc')),
)


def _nll_over_members(results: dict) -> float | None:
  """The ensemble's test NLL ÷ its members' mean test NLL (< 1: the ensemble earns its keep)."""
  members = _get(results, ('members_mean', 'nll'))
  return results['test']['nll'] / members if members else None


#: Is the ensemble at work, and does its uncertainty track people's? (name, key path or
#: function of results.json). ``rho_*``: Spearman correlation of each per-example uncertainty
#: with 1 − annotator agreement, where the data set carries one.
ENSEMBLE_COLUMNS = (
    ('val_nll', ('validation', 'nll')),
    ('members_accuracy', ('members_mean', 'accuracy')),
    ('members_nll', ('members_mean', 'nll')), ('nll_over_members', _nll_over_members),
    ('disagreement', ('diversity', 'disagreement')),
    ('mi', ('diversity', 'mutual_information')),
    ('rho_entropy', ('human_disagreement', 'entropy')),
    ('rho_mi', ('human_disagreement', 'mutual_information')),
    ('rho_max_prob', ('human_disagreement', 'one_minus_max_prob')),
)


#: The OOD scores :func:`ood_sets_table` reports per OOD set (results.json's ``ood_sets``, or
#: ``ood`` for a run with one set): the head's and, with ``ood.feature_scores``, the features'.
OOD_SCORES = (('AUROC MSP', 'auroc_msp'), ('AUROC entropy', 'auroc_entropy'),
              ('AUROC MI', 'auroc_mi'), ('AUROC Mahalanobis', 'auroc_mahalanobis'),
              ('AUROC feature disagreement', 'auroc_feature_disagreement'))


def ood_set_columns(runs: dict[str, list[dict]]) -> tuple[tuple[str, Any], ...]:
  """``('<set>/<score>', key path)`` for every OOD set the runs scored and each of
  :data:`OOD_SCORES`, for :func:`summarise`."""
  sets = []
  for results in runs.values():
    for r in results:
      for name in r.get('ood_sets') or ({r['ood']['dataset']: None} if 'ood' in r else {}):
        if name not in sets:
          sets.append(name)
  return tuple((f'{name}/{key}', functools.partial(ood_score, ood_set=name, score=key))
               for name in sets for _, key in OOD_SCORES)


def ood_score(results: dict, ood_set: str, score: str) -> float | None:
  """A run's ``score`` (e.g. ``auroc_mi``) on ``ood_set``: from ``ood_sets``, or from ``ood``
  where the run scored that one set alone; None where it did not score it."""
  if 'ood_sets' in results:
    return _get(results, ('ood_sets', ood_set, score))
  if _get(results, ('ood', 'dataset')) == ood_set:
    return _get(results, ('ood', score))
  return None


def _get(results, keys):
  """The value at key path ``keys`` in ``results`` (None where absent), or ``keys(results)``."""
  if callable(keys):
    return keys(results)
  for key in keys:
    results = results.get(key) if isinstance(results, dict) else None
  return results


TRAIN_TIME_FILENAME = 'train_time.json'


def run_one(config, method: str, seed: int, workdir: str) -> dict:
  """Trains and evaluates one (method, seed); reuses a finished run's results.json.

  The run's wall time goes into its results.json as ``train_time_s`` and also into
  ``train_time.json`` beside it: ``train.py --mode=eval`` rewrites results.json (e.g. to add
  a shift section) and knows nothing of the benchmark's clock, so a reused run takes its
  time from that file.
  """
  path = os.path.join(workdir, 'results.json')
  time_path = os.path.join(workdir, TRAIN_TIME_FILENAME)
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
    if os.path.exists(time_path):
      with open(time_path) as f:
        results['train_time_s'] = json.load(f)['train_time_s']
    return results
  config = config.copy_and_resolve_references()
  config.method = method
  config.seed = seed
  # One prepared copy of the data for every run.
  config.data.data_dir = config.data.data_dir or os.path.join(_root(), 'tfds_data')
  t0 = time.time()
  results = run_lib.run(config, workdir, 'train')
  results['train_time_s'] = time.time() - t0
  with open(time_path, 'w') as f:
    json.dump({'train_time_s': results['train_time_s']}, f)
  with open(path, 'w') as f:  # add the wall time to the run's own report
    json.dump(results, f, indent=2)
  return results


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def training_differences(config: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
  """The dotted keys whose values differ between two base configs (as JSON), leaving out
  :data:`TRAINING_NEUTRAL_KEYS` and everything under them."""
  flat, other_flat = _flatten(config), _flatten(other)
  neutral = lambda key: any(key == k or key.startswith(k + '.') for k in TRAINING_NEUTRAL_KEYS)
  return sorted(key for key in set(flat) | set(other_flat)
                if not neutral(key) and flat.get(key) != other_flat.get(key))


def require_same_training(config: Mapping[str, Any], other: Mapping[str, Any], what: str,
                          ignored: Sequence[str] = (), hint: str = '') -> None:
  """Refuses ``other`` (a saved base config, as JSON) that trains differently from ``config``.

  Raises:
    ValueError: ``{what} was trained from another base config (differs in [keys]){hint}``,
      the keys by :func:`training_differences`, less ``ignored``.
  """
  differences = [k for k in training_differences(config, other) if k not in ignored]
  if differences:
    raise ValueError(f'{what} was trained from another base config (differs in '
                     f'{differences}){hint}')


def pool_rows(row: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
  """Two :func:`summarise` rows of one method over disjoint seeds, as one row over all of them.

  Each column's mean and (population) std are pooled exactly from the rows' seed counts:
  the pooled mean is the count-weighted mean, the pooled second moment the count-weighted
  mean of ``std² + mean²``. A column that one row lacks keeps the other's value; one that a
  row computed from fewer seeds (NaN values left out) is weighted by the row's seeds, the
  only count a row records.
  """
  n, m = row['seeds'], other['seeds']
  pooled = {**other, **row, 'seeds': n + m}
  for key, stat in row.items():
    if _is_stat(stat) and _is_stat(other.get(key)):
      a, b = stat, other[key]
      mean = (n * a['mean'] + m * b['mean']) / (n + m)
      second = (n * (a['std'] ** 2 + a['mean'] ** 2) + m * (b['std'] ** 2 + b['mean'] ** 2))
      pooled[key] = {'mean': mean, 'std': math.sqrt(max(second / (n + m) - mean ** 2, 0.))}
  return pooled


def _is_stat(value: Any) -> bool:
  """A summarised column (``{'mean', 'std'}``), not another mapping of a row (e.g. a
  sweep setting's ``overrides``)."""
  return isinstance(value, Mapping) and 'mean' in value and 'std' in value


def pool_summaries(summary: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
  """``summary`` (a saved --summary's JSON) pooled per method with ``previous``, a summary of
  other seeds (:func:`pool_rows`); methods only one of them has are kept as they are.

  Raises:
    ValueError: the two were trained from different base configs (the keys are named), or
      their seeds overlap.
  """
  seed_ids = poolable_seeds(summary['config'], summary_seeds(summary), previous)
  return {**summary, 'seeds': len(seed_ids), 'seed_ids': seed_ids,
          'total_run_time_s': summary['total_run_time_s'] + previous['total_run_time_s'],
          'methods': pool_rows_by_name(summary['methods'], previous['methods'])}


def poolable_seeds(config: Mapping[str, Any], seeds: Sequence[int],
                   previous: Mapping[str, Any], rows_key: str = 'methods') -> list[int]:
  """``seeds`` and the seeds of ``previous`` (a saved summary whose rows are under
  ``rows_key``), sorted: what a summary of ``config`` at ``seeds`` pooled with it holds.

  Raises:
    ValueError: ``previous`` was trained from a base config other than ``config`` (the keys
      are named), or it holds some of ``seeds``.
  """
  require_same_training(config, previous['config'], '--pool_with: the saved summary')
  previous_seeds = summary_seeds(previous, rows_key)
  overlap = sorted(set(seeds) & set(previous_seeds))
  if overlap:
    raise ValueError(f'--pool_with: both summaries hold seeds {overlap}; pool disjoint seeds')
  return sorted([*seeds, *previous_seeds])


def pool_rows_by_name(rows: Mapping[str, Mapping[str, Any]],
                      previous: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """Rows (per method or setting) of two summaries over disjoint seeds, each name's pooled
  (:func:`pool_rows`); a name only one of them has keeps its row."""
  pooled = dict(previous)
  for name, row in rows.items():
    pooled[name] = pool_rows(row, pooled[name]) if name in pooled else row
  return pooled


def summary_seeds(summary: Mapping[str, Any], rows_key: str = 'methods') -> list[int]:
  """The seeds a saved summary ran (older summaries, without ``seed_ids``: from 0 up to the
  most seeds of any of its rows, under ``rows_key``)."""
  if 'seed_ids' in summary:
    return list(summary['seed_ids'])
  return list(range(max(row['seeds'] for row in summary[rows_key].values())))


def load_summary(path: str, flag: str) -> dict[str, Any]:
  """The saved summary at ``path``, which ``flag`` (e.g. ``--pool_with``) asks for.

  Raises:
    ValueError: there is none at ``path`` (``flag`` and ``path`` named).
  """
  if not os.path.exists(path):
    raise ValueError(f'{flag}: there is no saved summary {path}')
  with open(path) as f:
    return json.load(f)


def with_recipe(config, sweep_summary: Mapping[str, Any], path: str):
  """``config`` with the recipe ``sweep_summary`` (saved at ``path``) chose on validation
  (:func:`benchmarks.recipe.recipe_choices`); logs each choice, and warns of one at its
  grid's edge.

  Raises:
    ValueError: the sweep is not a recipe sweep, or was trained from another base config
      (beside the keys it chooses); ``--recipe_from`` and ``path`` named.
  """
  try:
    choices = recipe.recipe_choices(sweep_summary)
  except ValueError as e:
    raise ValueError(f'--recipe_from={path}: {e}') from None
  chosen = {k: v for choice in choices for k, v in choice.overrides.items()}
  require_same_training(json.loads(config.to_json_best_effort()), sweep_summary['config'],
                        f'--recipe_from={path}: the sweep', ignored=tuple(chosen))
  for choice in choices:
    logging.info('recipe from %s: %s (%s, validation NLL %.4f)', path, choice.overrides,
                 choice.setting, choice.val_nll)
    if choice.at_grid_edge:
      logging.warning('recipe from %s: %s is at the edge of its grid; a better value may lie '
                      'outside it', path, choice.overrides)
  return recipe.with_overrides(config, chosen)


def _learning_rate(results: dict) -> float | None:
  """The peak learning rate of a run (recorded by the run's report; older runs: the config's)."""
  if 'learning_rate' in results:
    return results['learning_rate']
  return _get(results, ('config', 'optim', 'learning_rate'))


def summarise(runs: dict[str, list[dict]],
              columns: tuple[tuple[str, Any], ...] = COLUMNS + ENSEMBLE_COLUMNS
              ) -> dict[str, dict]:
  """Mean and std over seeds of each of ``columns`` (name, key path or function of a run's
  results) and the wall time, per method (or per named setting: benchmarks/sweep.py).
  Absent and NaN values (a single model's MI) are left out; a column with none is omitted."""
  summary = {}
  for method, results in runs.items():
    row = {'num_members': results[0]['num_members'],
           'trainable_total': results[0]['params']['trainable_total'],
           'overhead': results[0]['params']['overhead'], 'seeds': len(results),
           'learning_rate': _learning_rate(results[0])}
    for name, keys in columns + (('train_time_s', ('train_time_s',)),):
      values = [v for v in (_get(r, keys) for r in results)
                if v is not None and not math.isnan(v)]
      if values:
        row[name] = {'mean': float(np.mean(values)), 'std': float(np.std(values))}
    summary[method] = row
  return summary


def format_stat(stat: dict | None, seeds: int, fmt: str = '{:.4f}') -> str:
  """``mean ± std`` of a summarised column; the mean alone for one seed (it has no spread);
  '–' where the column is absent."""
  if not stat:
    return '–'
  return (f'{fmt} ± {fmt}' if seeds > 1 else fmt).format(stat['mean'], stat['std'])


def table(summary: dict[str, dict], header: list[str], lead, keys: tuple[str, ...]) -> str:
  """A Markdown table: per row ``lead(name, row)`` cells, then each of ``keys``."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name, row in summary.items():
    seeds = row.get('seeds', 1)
    cells = lead(name, row) + [
        format_stat(row.get(key), seeds, '{:.0f}' if key == 'train_time_s' else '{:.4f}')
        for key in keys]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def markdown_table(summary: dict[str, dict]) -> str:
  """Test metrics, OOD and wall time per method: BENCHMARKS.md's main quality table."""
  def lead(method, row):
    lr = row.get('learning_rate')
    return [method, str(row['num_members']), f"{row['trainable_total']:,}",
            f'{lr:g}' if lr is not None else '–']
  header = ['method', 'M', 'trainable', 'lr', 'acc', 'NLL', 'Brier', 'ECE', 'NLL (TS)',
            'ECE (TS)', 'AUROC MI', 'AUROC MSP', 'AURC', 'train s']
  return table(summary, header, lead, ('accuracy', 'nll', 'brier', 'ece', 'nll_ts', 'ece_ts',
                                        'auroc_mi', 'auroc_msp', 'aurc', 'train_time_s'))


def ensemble_table(summary: dict[str, dict]) -> str:
  """Members against the ensemble, diversity, and ρ with human disagreement, per method."""
  header = ['method', 'seeds', 'val NLL', 'members acc', 'members NLL', 'NLL ÷ members',
            'disagreement', 'MI (nats)', 'ρ entropy', 'ρ MI', 'ρ 1 − max p']
  return table(summary, header, lambda method, row: [method, str(row['seeds'])],
                tuple(name for name, _ in ENSEMBLE_COLUMNS))


def ood_sets_table(summary: dict[str, dict], columns: tuple[tuple[str, Any], ...]) -> str:
  """Per method and OOD set, the AUROC of each of :data:`OOD_SCORES` (mean ± std)."""
  lines = ['| method | OOD set | ' + ' | '.join(h for h, _ in OOD_SCORES) + ' |',
           '|---|---|' + '---|' * len(OOD_SCORES)]
  sets = list(dict.fromkeys(name.split('/')[0] for name, _ in columns))
  for method, row in summary.items():
    for ood_set in sets:
      cells = [format_stat(row.get(f'{ood_set}/{key}'), row['seeds']) for _, key in OOD_SCORES]
      if any(c != '–' for c in cells):
        lines.append(f'| {method} | {ood_set} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def zero_shot_runs(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
  """``{'zero_shot': [...]}``: a decoder's pretrained model before training, per seed, read as
  a run (results.json's ``zero_shot``; the same for every method at a seed, since the seed
  picks the data), or ``{}`` where no run has one."""
  for results in runs.values():
    if results and all('zero_shot' in r for r in results):
      return {'zero_shot': [_zero_shot_run(r) for r in results]}
  return {}


def _zero_shot_run(results: dict) -> dict:
  """A run's ``zero_shot`` section as a run of one model that trained nothing; its ``ood``
  names the set it scored (the run's first, which the section does not repeat)."""
  run = {'num_members': 1, 'params': {'trainable_total': 0, 'overhead': 0.},
         **results['zero_shot']}
  if 'ood' in run and 'ood' in results:
    run['ood'] = {'dataset': results['ood'].get('dataset'), **run['ood']}
  return run


def _root() -> str:
  return flags.FLAGS.workdir or 'workdir/quality'


def seed_range() -> range:
  """The seeds this invocation runs (--first_seed, --seeds)."""
  return range(_FIRST_SEED.value, _FIRST_SEED.value + _SEEDS.value)


def write_summary(config, runs: dict[str, list[dict]],
                  previous: Mapping[str, Any] | None = None) -> dict[str, dict]:
  """Writes --summary from the runs finished so far, pooled with ``previous`` (a summary of
  other seeds: :func:`pool_summaries`) where given, and returns the per-method summary."""
  finished = {m: r for m, r in runs.items() if r}
  finished.update(zero_shot_runs(finished))
  summary = summarise(finished, COLUMNS + ENSEMBLE_COLUMNS + ood_set_columns(finished))
  total = sum(r.get('train_time_s', 0.0) for results in runs.values() for r in results)
  saved = {'config': json.loads(config.to_json_best_effort()), 'seeds': _SEEDS.value,
           'seed_ids': list(seed_range()), 'total_run_time_s': total, 'methods': summary}
  if _RECIPE_FROM.value:
    saved['recipe_from'] = _RECIPE_FROM.value
  if previous is not None:
    saved = pool_summaries(saved, previous)
    summary = saved['methods']
  out_dir = os.path.dirname(os.path.abspath(_SUMMARY.value))
  os.makedirs(out_dir, exist_ok=True)
  with open(_SUMMARY.value, 'w') as f:
    json.dump(saved, f, indent=2)
  # Runs scored under corruption (config.shift): shift_<summary name>.json and .png.
  shift_bench.write_shift(runs, os.path.splitext(os.path.basename(_SUMMARY.value))[0], out_dir)
  return summary


def main(argv):
  del argv
  config = flags.FLAGS.config
  if _RECIPE_FROM.value:
    config = with_recipe(config, load_summary(_RECIPE_FROM.value, '--recipe_from'),
                         _RECIPE_FROM.value)
  runs = {method: [] for method in _METHODS.value}
  previous = None
  if _POOL_WITH.value:
    previous = load_summary(_POOL_WITH.value, '--pool_with')
    # Refuse a mismatch before any training.
    poolable_seeds(json.loads(config.to_json_best_effort()), list(seed_range()), previous)
  # Seed-major, so a stopped benchmark already has every method at the first seeds; the
  # summary is rewritten after each run.
  for seed in seed_range():
    for method in _METHODS.value:
      workdir = os.path.join(_root(), method, f'seed_{seed}')
      runs[method].append(run_one(config, method, seed, workdir))
      summary = write_summary(config, runs, previous)
  print(markdown_table(summary))
  print()
  print(ensemble_table(summary))
  print()
  print(ood_sets_table(summary, ood_set_columns(runs)))
  shift = shift_bench.summarise(runs)
  if shift:
    print()
    print(shift_bench.markdown_table(shift))


if __name__ == '__main__':
  user_errors.run_cli(main)
