r"""A recipe study: a named grid of settings through train.py's own code path.

  python -m benchmarks.sweep --config=configs/default.py --grid=lr --seeds=1 \
      --workdir=workdir/sweep_lr --config.eval_every_steps=20
  python -m benchmarks.sweep --config=configs/default.py --grid=diversity --seeds=3 \
      --workdir=workdir/sweep_diversity --config.optim.learning_rate=1e-2

``--grid`` names a preset of :data:`GRIDS` (``--settings=a,b`` keeps some of its settings); ``--config.*`` overrides set the base every
setting starts from (a setting's own overrides win). Each (setting, seed) is one ``train.run``
in ``--workdir/<setting>/seed_<k>`` through :func:`benchmarks.quality.run_one`: a finished run
is read back, an interrupted one resumes from its checkpoints. A setting that only changes how
members are averaged (``ensemble_mode``) is read from the run it shares (``results.json``'s
``ensemble_modes``): nothing is retrained for it.

Writes ``--sweep_out`` + ``.json``: per setting the mean ± std over seeds of the validation
and the test metrics (the ensemble's, the members' mean, disagreement, mutual information),
ECE after temperature scaling, OOD AUROC by MI, how far s moved and the wall time, and
``best``: the setting of lowest mean **validation** NLL among those run on the most seeds
(test never selects).
``--sweep_out`` + ``_vs_<key>.png``, where the settings differ in one number (``members``:
``num_members``; ``lr``: the learning rate): NLL, ECE (TS), disagreement, MI and OOD AUROC
against it, mean ± std over seeds.
``--sweep_out`` + ``.png``: the learning curves, validation NLL and accuracy against step,
one line per trained setting (mean over seeds), from each run's metrics.jsonl
(``--config.eval_every_steps`` sets their resolution); with ``--config.ood.every_validation``
a third panel, the OOD AUROCs by max probability, entropy and MI at each validation.
``--keep_previous``: the settings this invocation does not run (``--settings``) keep their
rows and curves from the existing ``--sweep_out`` .json, e.g. when their run folders are gone;
it refuses a summary whose base config trains differently. ``--first_seed``, ``--seeds``
(default 0 and 3) and ``--pool_with`` are benchmarks/quality.py's flags; its ``--methods``
and ``--summary`` do not apply here. ``--pool_with`` names a saved sweep summary of other
seeds (say seed 0, run earlier with ``--seeds=1``); the new summary pools both exactly
(:func:`pool_sweeps`), and refuses another base config or overlapping seeds.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from absl import flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from benchmarks import quality
from benchmarks.recipe import SELECTED_ON, best_setting, with_overrides
from sve_jax.train import user_errors

# --config, --workdir (the root of the runs) are train.py's flags; --first_seed, --seeds and
# --pool_with are quality.py's.
_GRID = flags.DEFINE_string('grid', 'lr', 'Preset of settings: one of benchmarks.sweep.GRIDS.')
_SETTINGS = flags.DEFINE_list('settings', None, "Subset of the grid's settings, by name "
                              '(default: all); e.g. summarise the finished ones of a cut run.')
_OUT = flags.DEFINE_string('sweep_out', '', "Summary path without suffix ('' = "
                           'benchmarks/results/sweep_<grid>); writes .json and .png.')
_KEEP_PREVIOUS = flags.DEFINE_bool(
    'keep_previous', False, "Keep the rows and curves of the grid's settings that this "
    "invocation does not run (--settings) from the existing --sweep_out .json, if its base "
    'config trains the same; for settings whose run folders are gone.')


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of a grid.

  Attributes:
    name: its folder and its label in the summary.
    overrides: ``{dotted config key: value}`` applied to the base config.
    mode: read the ensemble's metrics in this averaging mode (``results.json``'s
      ``ensemble_modes``) instead of the run's own ``config.ensemble_mode``.
    shares: the name of the setting whose runs this one reads (no training of its own).
  """
  name: str
  overrides: Mapping[str, Any]
  mode: str | None = None
  shares: str | None = None


_SVE = {'method': 'sve'}
#: The presets. ``lr``/``steps``: cheap single-model questions (``single_svf``) about fit.
#: ``diversity``: SVE, one knob at a time away from the base. ``default_vs_ft``: the config
#: unchanged next to ``single_ft`` on the same data and seeds.
GRIDS: dict[str, tuple[Setting, ...]] = {
    'lr': tuple(Setting(f'lr_{lr:g}', {'method': 'single_svf', 'optim.learning_rate': lr})
                for lr in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    'steps': tuple(Setting(f'epochs_{n}', {'method': 'single_svf', 'num_epochs': n})
                   for n in (2, 4, 8)),
    'diversity': (
        # Ordered by what a cut-short run should have answered first.
        Setting('base', _SVE),
        Setting('logits_averaging', _SVE, mode='logits', shares='base'),
        # Every diversity knob at once: does their sum buy what none buys alone?
        Setting('all_diversity_knobs', {**_SVE, 'noise_std': 0.1, 'head_init_std': 0.03,
                                        'member_data_order': True}),
        Setting('member_data_order', {**_SVE, 'member_data_order': True}),
        Setting('noise_0.1', {**_SVE, 'noise_std': 0.1}),
        # 0.03 ≈ 1/√(3·384), the std of PyTorch's default nn.Linear init on MiniLM's 384
        # features; the tied head starts at noise_std = 0.01.
        Setting('head_init_0.03', {**_SVE, 'head_init_std': 0.03}),
        Setting('official_schedule', {**_SVE, 'optim.schedule': 'official'}),
        Setting('noise_0.03', {**_SVE, 'noise_std': 0.03}),
    ),
    # The config as given against a single full fine-tune: the acceptance table.
    'default_vs_ft': (Setting('default', {}), Setting('single_ft', {'method': 'single_ft'})),
    # The paper's ablations: ensemble size, and attention-only against every projection.
    'members': tuple(Setting(f'members_{m}', {**_SVE, 'num_members': m})
                     for m in (1, 2, 4, 8, 16)),
    # Issue 38: SVE adapting only the top K of MiniLM's 6 blocks (K = L, L/2, L/4 rounded
    # up); with --config.trunk_cache=True every setting trains on cached trunk outputs.
    'depth': tuple(Setting(f'blocks_{k}', {**_SVE, 'model.adapted_blocks': k})
                   for k in (6, 3, 2)),
    'attention': (Setting('all_projections', {**_SVE, 'sve_targets': 'all'}),
                  Setting('attention_only', {**_SVE, 'sve_targets': 'attention'})),
    # Does the OOD signal change with the training budget? Run with a long budget and OOD
    # scored at every validation, e.g. --config.data.max_train_examples=8000
    # --config.num_epochs=4 --config.eval_every_steps=250 --config.ood.every_validation=True.
    'ood_budget': (Setting('sve_lr_0.001', {**_SVE, 'optim.learning_rate': 1e-3}),
                   Setting('sve_lr_0.01', {**_SVE, 'optim.learning_rate': 1e-2}),
                   Setting('single_ft', {'method': 'single_ft'}),
                   Setting('deep_ensemble', {'method': 'deep_ensemble'})),
    # A new task's learning rates, one member each, at the config's budget: the SVE/
    # BatchEnsemble rate by its single member (single_svf), the full fine-tunes' (single_ft,
    # deep ensemble) and LoRA-Ensemble's. Each family's row of lowest validation NLL is its
    # recipe; ``best`` (lowest overall) compares families and means nothing here.
    'recipe': (*(Setting(f'svf_lr_{lr:g}', {'method': 'single_svf', 'optim.learning_rate': lr})
                 for lr in (1e-3, 1e-2, 3e-2)),
               *(Setting(f'ft_lr_{lr:g}', {'method': 'single_ft',
                                           'optim.full_finetune_learning_rate': lr})
                 for lr in (1e-5, 5e-5, 5e-4)),
               *(Setting(f'lora_lr_{lr:g}', {'method': 'lora_ensemble', 'num_members': 1,
                                             'optim.lora_learning_rate': lr})
                 for lr in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2))),
}

#: Summary columns: (name, key path into results.json).
COLUMNS = (
    ('val_accuracy', ('validation', 'accuracy')), ('val_nll', ('validation', 'nll')),
    ('val_ece', ('validation', 'ece')),
    ('val_members_accuracy', ('validation', 'members_mean_accuracy')),
    ('val_members_nll', ('validation', 'members_mean_nll')),
    ('val_disagreement', ('validation', 'disagreement')),
    ('val_mi', ('validation', 'mutual_information')),
    ('accuracy', ('test', 'accuracy')), ('nll', ('test', 'nll')), ('ece', ('test', 'ece')),
    ('ece_ts', ('test_temperature_scaled', 'ece')),
    ('temperature', ('test_temperature_scaled', 'temperature')),
    ('members_accuracy', ('members_mean', 'accuracy')),
    ('members_nll', ('members_mean', 'nll')),
    ('disagreement', ('diversity', 'disagreement')),
    ('mi', ('diversity', 'mutual_information')),
    ('auroc_mi', ('ood', 'auroc_mi')),
    ('auroc_msp', ('ood', 'auroc_msp')),
    ('auroc_mahalanobis', ('ood', 'auroc_mahalanobis')),
    ('auroc_feature_disagreement', ('ood', 'auroc_feature_disagreement')),
    ('s_change', ('singular_value_change',)),
)
#: The validation records' curves, and the OOD AUROCs a run logs beside them
#: (``config.ood.every_validation``), by their metrics.jsonl keys.
CURVE_KEYS = ('val_nll', 'val_accuracy')
OOD_CURVE_KEYS = ('ood_auroc_msp', 'ood_auroc_entropy', 'ood_auroc_mi')


def settings_for(grid: str) -> tuple[Setting, ...]:
  """The preset ``grid`` (raises ValueError naming ``--grid`` and the presets)."""
  if grid not in GRIDS:
    raise ValueError(f'--grid={grid!r} is not a preset; expected one of {sorted(GRIDS)}')
  return GRIDS[grid]


def results_in_mode(results: dict, mode: str) -> dict:
  """``results`` with the ensemble's validation, test, T-scaled test and OOD scores taken
  from its ``ensemble_modes[mode]`` (members, diversity and s movement do not depend on it)."""
  by_mode = results['ensemble_modes'][mode]
  viewed = copy.deepcopy(results)
  viewed['validation'].update(by_mode['validation'])
  for key in ('test', 'test_temperature_scaled', 'ood'):
    if key in by_mode:
      viewed[key] = {**viewed.get(key, {}), **by_mode[key]}
  return viewed


def run_seeds(results: Sequence[Mapping[str, Any]]) -> list[int]:
  """The seed of each run, as its results.json's config records it."""
  return [r['config']['seed'] for r in results]


def run_grid(config, settings: tuple[Setting, ...], root: str,
             seeds: Sequence[int]) -> dict[str, list[dict]]:
  """Runs (or reads back) every setting at each seed of ``seeds``; ``{name: [results]}``.

  Seed-major, as benchmarks/quality.py, so a stopped sweep has every setting at its first
  seeds. ``main`` passes ``--first_seed``, …, ``--first_seed + --seeds - 1``.
  """
  names = [s.name for s in settings]
  for setting in settings:
    if setting.shares is not None and setting.shares not in names:
      raise ValueError(f'setting {setting.name!r} shares the runs of {setting.shares!r}, '
                       f'which is not in the grid {names}')
  runs: dict[str, list[dict]] = {name: [] for name in names}
  for seed in seeds:
    for setting in (s for s in settings if s.shares is None):
      setting_config = with_overrides(config, setting.overrides)
      workdir = os.path.join(root, setting.name, f'seed_{seed}')
      results = quality.run_one(setting_config, setting_config.method, seed, workdir)
      runs[setting.name].append(results_in_mode(results, setting.mode) if setting.mode
                                else results)
    for setting in (s for s in settings if s.shares is not None):
      shared = runs[setting.shares][-1]  # this seed's run of the shared setting
      runs[setting.name].append(results_in_mode(shared, setting.mode or 'probs'))
  return runs


def summarise(settings: tuple[Setting, ...], runs: dict[str, list[dict]]) -> dict[str, Any]:
  """Mean ± std over seeds per setting, its overrides, and the best one by validation NLL."""
  rows = quality.summarise({s.name: runs[s.name] for s in settings if runs[s.name]}, COLUMNS)
  for setting in settings:
    if setting.name in rows:
      rows[setting.name].update(overrides=dict(setting.overrides), mode=setting.mode,
                                shares=setting.shares)
  return {'selected_on': SELECTED_ON, 'best': best_setting(rows), 'settings': rows}


def keep_previous(summary: Mapping[str, Any], previous: Mapping[str, Any],
                  config: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
  """``summary`` with the rows and learning curves of ``previous`` (an earlier summary of the
  same grid) for the settings ``summary`` lacks, in the grid's ``order``; ``best`` is chosen
  again over all of them. Each kept row is marked ``'kept_from_previous': True``.

  Raises:
    ValueError: ``previous`` was trained from a base config other than ``config`` (both as
      JSON); the differing keys are named.
  """
  quality.require_same_training(config, previous['config'], '--keep_previous: the saved summary',
                                hint='; rerun its settings instead')
  rows, curves = dict(summary['settings']), dict(summary.get('learning_curves', {}))
  for name, row in previous['settings'].items():
    if name not in rows:
      rows[name] = {**row, 'kept_from_previous': True}
      if name in previous.get('learning_curves', {}):
        curves[name] = previous['learning_curves'][name]
  return {**summary, 'best': best_setting(rows), 'settings': in_grid_order(rows, order),
          'learning_curves': in_grid_order(curves, order)}


def in_grid_order(by_setting: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
  """``by_setting`` with its keys in the grid's ``order`` (names not in it last)."""
  rank = {name: i for i, name in enumerate(order)}
  return dict(sorted(by_setting.items(), key=lambda item: rank.get(item[0], len(rank))))


def learning_curve(workdir: str) -> dict[str, list[float]]:
  """``{'step', 'val_nll', 'val_accuracy'}`` of one run's metrics.jsonl validation records,
  and each of :data:`OOD_CURVE_KEYS` that every one of them holds.

  A resumed run logs the steps after its checkpoint again: the last record of a step wins.
  """
  records = {}
  path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        if 'val_nll' in record:
          records[record['step']] = record
  steps = sorted(records)
  keys = CURVE_KEYS + tuple(k for k in OOD_CURVE_KEYS
                            if steps and all(k in records[s] for s in steps))
  return {'step': steps, **{key: [records[s][key] for s in steps] for key in keys}}


def pool_sweeps(summary: Mapping[str, Any], previous: Mapping[str, Any],
                config: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
  """``summary`` pooled with ``previous``, a summary of the same grid over other seeds, as one
  summary over all of them: each setting's rows by :func:`benchmarks.quality.pool_rows`
  (exact mean and std), its learning curve as the seed-weighted mean at the steps both have;
  ``best`` is chosen again. Settings only one of them has are kept as they are.

  Raises:
    ValueError: ``previous`` was trained from a base config other than ``config``, or the two
      share seeds.
  """
  seed_ids = quality.poolable_seeds(config, summary['seed_ids'], previous, 'settings')
  curves = dict(previous.get('learning_curves', {}))
  for name, curve in summary.get('learning_curves', {}).items():
    if name in curves:  # both ran it: weight each mean curve by its seeds
      curve = _weighted_curve(curve, summary['settings'][name]['seeds'], curves[name],
                              previous['settings'][name]['seeds'])
    curves[name] = curve
  rows = quality.pool_rows_by_name(summary['settings'], previous['settings'])
  return {**summary, 'seed_ids': seed_ids, 'best': best_setting(rows),
          'settings': in_grid_order(rows, order), 'learning_curves': in_grid_order(curves, order)}


def _weighted_curve(a: Mapping[str, list[float]], n: int, b: Mapping[str, list[float]],
                    m: int) -> dict[str, list[float]]:
  """Curves ``a`` (mean of n seeds) and ``b`` (of m) as one mean, at the steps both have."""
  steps = sorted(set(a['step']) & set(b['step']))
  pooled = {'step': steps}
  for key in (k for k in a if k != 'step' and k in b):
    at_a, at_b = dict(zip(a['step'], a[key])), dict(zip(b['step'], b[key]))
    pooled[key] = [(n * at_a[step] + m * at_b[step]) / (n + m) for step in steps]
  return pooled


def mean_curve(curves: list[dict[str, list[float]]]) -> dict[str, list[float]]:
  """The mean over seeds at the steps every seed validated at, of the keys every seed has."""
  steps = sorted(set.intersection(*(set(c['step']) for c in curves))) if curves else []
  mean = {'step': steps}
  keys = CURVE_KEYS + tuple(k for k in OOD_CURVE_KEYS if curves and all(k in c for c in curves))
  for key in keys:
    per_seed = [dict(zip(c['step'], c[key])) for c in curves]
    mean[key] = [float(np.mean([values[s] for values in per_seed])) for s in steps]
  return mean


def plot_learning_curves(path: str, curves: Mapping[str, dict[str, list[float]]]) -> str:
  """Writes a PNG: validation NLL (top) and accuracy against step, one line each; where a
  curve holds OOD AUROCs (:data:`OOD_CURVE_KEYS`), a third panel of them, one colour per
  setting and one line style per score."""
  with_ood = any(k in c for c in curves.values() for k in OOD_CURVE_KEYS)
  figure = Figure(figsize=(7, 10 if with_ood else 7), layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.subplots(3 if with_ood else 2, 1, sharex=True)
  top, middle = axes[0], axes[1]
  styles = dict(zip(OOD_CURVE_KEYS, ('-', '--', ':')))
  for i, (name, curve) in enumerate(curves.items()):
    color = f'C{i % 10}'
    top.plot(curve['step'], curve['val_nll'], marker='.', color=color, label=name)
    middle.plot(curve['step'], curve['val_accuracy'], marker='.', color=color, label=name)
    for key in (k for k in OOD_CURVE_KEYS if k in curve):
      axes[2].plot(curve['step'], curve[key], marker='.', color=color, linestyle=styles[key],
                   label=f"{name}: {key.removeprefix('ood_auroc_')}")
  top.set(title='Validation learning curves (mean over seeds)', ylabel='validation NLL')
  middle.set(ylabel='validation accuracy')
  if with_ood:
    axes[2].set(ylabel='OOD AUROC', ylim=(0., 1.))
    axes[2].axhline(0.5, color='gray', linewidth=0.5)
    axes[2].legend(fontsize='x-small', ncol=3)
  axes[-1].set(xlabel='step')
  top.legend(fontsize='small')
  figure.savefig(path, dpi=120)
  return path


#: The panels of a plot against a grid's axis: (y label, ((summary column, line label), ...)).
AXIS_PANELS = (
    ('NLL', (('val_nll', 'validation'), ('nll', 'test'), ('members_nll', "test, members' mean"))),
    ('ECE after temperature scaling', (('ece_ts', 'test'),)),
    ('members', (('disagreement', 'disagreement'), ('mi', 'mutual information (nats)'))),
    ('OOD AUROC', (('auroc_mi', 'mutual information'), ('auroc_msp', 'max probability'),
                   ('auroc_mahalanobis', 'Mahalanobis'))),
)


def grid_axis(rows: Mapping[str, Mapping[str, Any]]) -> str | None:
  """The one override key whose value differs between a summary's ``rows``, if every row
  sets it to a number (``members``: ``num_members``; ``lr``: ``optim.learning_rate``); else
  None (several knobs at once, or a choice such as ``sve_targets``)."""
  overrides = [row.get('overrides') or {} for row in rows.values()]
  keys = sorted(set().union(*overrides)) if len(overrides) > 1 else []
  varying = [k for k in keys if len({json.dumps(o.get(k)) for o in overrides}) > 1]
  if len(varying) != 1:
    return None
  values = [o.get(varying[0]) for o in overrides]
  numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
  return varying[0] if numeric else None


def plot_against_axis(path: str, rows: Mapping[str, Mapping[str, Any]], key: str) -> str:
  """Writes a PNG: each of :data:`AXIS_PANELS`' summary columns, mean ± std over seeds as
  error bars, against the override ``key`` (:func:`grid_axis`) of the ``rows``; on a log
  scale where the values span a factor of 8 or more. Columns no row has are left out."""
  by_value = sorted(rows.values(), key=lambda row: row['overrides'][key])
  x = [row['overrides'][key] for row in by_value]
  panels = [(label, [(c, name) for c, name in lines if any(c in row for row in by_value)])
            for label, lines in AXIS_PANELS]
  panels = [(label, lines) for label, lines in panels if lines]
  figure = Figure(figsize=(7, 2.6 * len(panels)), layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
  for ax, (label, lines) in zip(axes, panels):
    for column, name in lines:
      points = [(v, row[column]) for v, row in zip(x, by_value) if column in row]
      ax.errorbar([v for v, _ in points], [c['mean'] for _, c in points],
                  yerr=[c['std'] for _, c in points], marker='o', capsize=3, label=name)
    ax.set(ylabel=label)
    ax.legend(fontsize='small')
  if min(x) > 0 and max(x) / min(x) >= 8:
    axes[-1].set_xscale('log', base=2 if all(isinstance(v, int) for v in x) else 10)
  axes[-1].set(xlabel=key, xticks=x, xticklabels=[f'{v:g}' for v in x])
  seeds = sorted({row.get('seeds', 1) for row in by_value})
  axes[0].set(title=f"Against {key} (mean ± std over {'/'.join(map(str, seeds))} seeds)")
  figure.savefig(path, dpi=120)
  return path


def write_outputs(out: str, config, settings: tuple[Setting, ...], runs: dict[str, list[dict]],
                  root: str, previous: Mapping[str, Any] | None = None,
                  order: tuple[str, ...] = (),
                  pool_with: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes ``out.json`` (:func:`summarise` and the base config) and ``out.png``, and where
  the settings differ in one number (:func:`grid_axis`), ``out_vs_<key>.png``
  (:func:`plot_against_axis`); with ``previous``, the settings this call lacks are kept from
  it (:func:`keep_previous`); with ``pool_with``, a summary of other seeds, the two are pooled
  (:func:`pool_sweeps`)."""
  summary = summarise(settings, runs)
  summary['learning_curves'] = {
      s.name: mean_curve([learning_curve(os.path.join(root, s.name, f'seed_{seed}'))
                          for seed in run_seeds(runs[s.name])])
      for s in settings if s.shares is None and runs[s.name]}
  config_json = json.loads(config.to_json_best_effort())
  summary['seed_ids'] = sorted({seed for s in settings for seed in run_seeds(runs[s.name])})
  order = order or tuple(s.name for s in settings)
  if previous is not None:
    summary = keep_previous(summary, previous, config_json, order)
  if pool_with is not None:
    summary = pool_sweeps(summary, pool_with, config_json, order)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + '.json', 'w') as f:
    json.dump({'config': config_json, **summary}, f, indent=2)
  plot_learning_curves(out + '.png', summary['learning_curves'])
  axis = grid_axis(summary['settings'])
  if axis:
    plot_against_axis(f"{out}_vs_{axis.replace('.', '_')}.png", summary['settings'], axis)
  return summary


def markdown_table(summary: Mapping[str, Any]) -> str:
  """One row per setting: validation (selects), then test; the best setting in bold."""
  header = ('setting', 'val NLL', 'val acc', 'acc', 'members acc', 'NLL', 'members NLL',
            'ECE (TS)', 'disagreement', 'MI', 'AUROC MI', 's change', 'train s')
  keys = ('val_nll', 'val_accuracy', 'accuracy', 'members_accuracy', 'nll', 'members_nll',
          'ece_ts', 'disagreement', 'mi', 'auroc_mi', 's_change', 'train_time_s')
  def lead(name, row):
    del row
    return [f'**{name}**' if name == summary['best'] else name]
  return quality.table(summary['settings'], list(header), lead, keys)


def main(argv):
  del argv
  settings = grid = settings_for(_GRID.value)
  if _SETTINGS.value:
    unknown = sorted(set(_SETTINGS.value) - {s.name for s in settings})
    if unknown:
      raise ValueError(f'--settings: {unknown} are not in --grid={_GRID.value}')
    settings = tuple(s for s in settings if s.name in _SETTINGS.value)
  config = flags.FLAGS.config.copy_and_resolve_references()
  root = flags.FLAGS.workdir or f'workdir/sweep_{_GRID.value}'
  # One prepared copy of the data for every run.
  config.data.data_dir = config.data.data_dir or os.path.join(root, 'tfds_data')
  out = _OUT.value or f'benchmarks/results/sweep_{_GRID.value}'
  pool_with = None
  if flags.FLAGS.pool_with:
    if os.path.abspath(flags.FLAGS.pool_with) == os.path.abspath(out + '.json'):
      raise ValueError('--pool_with: name a summary other than --sweep_out, which is rewritten')
    pool_with = quality.load_summary(flags.FLAGS.pool_with, '--pool_with')
    # Refuse a mismatch before any training.
    quality.poolable_seeds(json.loads(config.to_json_best_effort()),
                           list(quality.seed_range()), pool_with, 'settings')
  previous = (quality.load_summary(out + '.json', '--keep_previous') if _KEEP_PREVIOUS.value
              else None)
  runs = run_grid(config, settings, root, quality.seed_range())
  summary = write_outputs(out, config, settings, runs, root, previous,
                          tuple(s.name for s in grid), pool_with)
  print(markdown_table(summary))
  print(f"best by {summary['selected_on']}: {summary['best']}")


if __name__ == '__main__':
  user_errors.run_cli(main)
