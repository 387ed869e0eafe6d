"""The benchmark scripts' arithmetic: ratios and the summary over seeds."""
import json
import os

import numpy as np
import pytest

from benchmarks import cost
from benchmarks import quality


def test_cost_ratios_compare_sve_with_m_single_models_and_the_deep_ensemble():
  rows = [
      {'method': 'single_ft', 'members': 1, 'execution': 'compose', 'train_step_s': 2.0,
       'inference_s': 1.0},
      {'method': 'deep_ensemble', 'members': 4, 'execution': 'compose', 'train_step_s': 8.0,
       'inference_s': 4.0,
       'compiled_step_bytes': 400},
      {'method': 'sve', 'members': 4, 'execution': 'compose', 'train_step_s': 4.0,
       'inference_s': 3.0,
       'inference_materialized_s': 2.0, 'compiled_step_bytes': 100},
      {'method': 'sve', 'members': 1, 'execution': 'factored', 'train_step_s': 1.0,
       'inference_s': 0.5},
  ]
  cost.add_ratios(rows)
  sve4, sve1 = rows[2], rows[3]
  assert sve4['train_vs_m_single'] == pytest.approx(4.0 / (4 * 2.0))
  assert sve4['inference_vs_m_single'] == pytest.approx(3.0 / 4.0)
  assert sve4['train_vs_deep_ensemble'] == pytest.approx(0.5)
  assert sve4['compiled_step_vs_deep_ensemble'] == pytest.approx(0.25)
  assert sve4['inference_materialized_vs_deep_ensemble'] == pytest.approx(0.5)
  assert 'train_vs_deep_ensemble' not in sve1  # no deep ensemble of one member
  table = cost.markdown_table(rows).splitlines()
  assert len(table) == 2 + len(rows)
  assert table[4].startswith('| SVE | 4 | compose | 4000.0 | 0.50 | 0.50 |')
  assert '| 3000.0 | 0.75 | 2000.0 | 0.50 |' in table[4]  # inference, then materialised


def test_quality_summary_is_mean_and_std_over_seeds():
  def result(acc, auroc):
    return {'num_members': 4, 'params': {'trainable_total': 10, 'overhead': 0.01},
            'test': {'accuracy': acc, 'nll': 0.5, 'brier': 0.2, 'ece': 0.05},
            'test_temperature_scaled': {'nll': 0.4, 'ece': 0.02},
            'ood': {'auroc_mi': auroc, 'auroc_msp': 0.6}, 'train_time_s': 60.,
            'selective': {'msp': {'aurc': acc / 10}}, 'learning_rate': 1e-3}
  summary = quality.summarise({'sve': [result(0.7, 0.8), result(0.8, 0.9)]})
  row = summary['sve']
  assert row['accuracy']['mean'] == pytest.approx(0.75)
  assert row['accuracy']['std'] == pytest.approx(np.std([0.7, 0.8]))
  assert row['auroc_mi']['mean'] == pytest.approx(0.85) and row['seeds'] == 2
  assert row['aurc']['mean'] == pytest.approx(0.075)
  assert '| 0.0750 ± 0.0050 | 60 ± 0 |' in quality.markdown_table(summary)  # AURC, train s
  table = quality.markdown_table(summary)
  assert '| sve | 4 | 10 | 0.001 | 0.7500 ± 0.0500 |' in table
  # One seed has no spread: its cells are the values alone, not '± 0.0000'.
  one_seed = quality.markdown_table(quality.summarise({'sve': [result(0.7, 0.8)]}))
  assert '| sve | 4 | 10 | 0.001 | 0.7000 | 0.5000 |' in one_seed and '±' not in one_seed


def test_quality_keeps_a_runs_wall_time_when_train_py_eval_rewrites_its_results(
    tmp_path, monkeypatch):
  import ml_collections
  from sve_jax.train import run as run_lib
  clock = iter([100.0, 160.0])
  monkeypatch.setattr(quality.time, 'time', lambda: next(clock))
  monkeypatch.setattr(run_lib, 'run', lambda config, workdir, mode: {'test': {'accuracy': 0.7}})
  config = ml_collections.ConfigDict({'method': 'sve', 'seed': 0, 'data': {'data_dir': 'd'}})
  workdir = str(tmp_path / 'sve' / 'seed_0')
  os.makedirs(workdir)
  assert quality.run_one(config, 'sve', 0, workdir)['train_time_s'] == 60.0
  # `train.py --mode=eval` writes a new results.json, without the benchmark's clock.
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump({'test': {'accuracy': 0.71}, 'shift': {}}, f)
  monkeypatch.setattr(run_lib, 'run', lambda *a, **k: pytest.fail('a finished run retrained'))
  reused = quality.run_one(config, 'sve', 0, workdir)
  assert reused['train_time_s'] == 60.0 and reused['test']['accuracy'] == 0.71


def test_quality_pools_summaries_of_disjoint_seeds_exactly_as_one_summary_of_all_of_them():
  def result(acc, nll):
    return {'num_members': 4, 'params': {'trainable_total': 10, 'overhead': 0.01},
            'test': {'accuracy': acc, 'nll': nll}, 'train_time_s': 60.}
  accuracies, nlls = [0.70, 0.74, 0.81], [0.62, 0.55, 0.71]
  runs = [result(a, n) for a, n in zip(accuracies, nlls)]
  config = {'method': 'sve', 'data': {'data_dir': 'a'}, 'shift': {'enabled': False}}
  saved = lambda results, seeds, cfg=config: {
      'config': cfg, 'seed_ids': seeds, 'total_run_time_s': 60. * len(results),
      'methods': quality.summarise({'laplace_lora': results})}
  # Seed 0 saved by an older run (no seed_ids: seeds counted from 0), seeds 1-2 now, run
  # elsewhere and scored under shift, which trains nothing differently.
  previous = saved(runs[:1], None)
  del previous['seed_ids']
  now = saved(runs[1:], [1, 2], {**config, 'data': {'data_dir': 'b'},
                                 'shift': {'enabled': True}})
  pooled = quality.pool_summaries(now, previous)
  row = pooled['methods']['laplace_lora']
  assert row['seeds'] == 3 and pooled['seed_ids'] == [0, 1, 2]
  for key, values in (('accuracy', accuracies), ('nll', nlls)):  # numpy over all 3 seeds
    assert row[key]['mean'] == pytest.approx(np.mean(values))
    assert row[key]['std'] == pytest.approx(np.std(values))
  assert pooled['total_run_time_s'] == pytest.approx(180.)
  with pytest.raises(ValueError, match=r'seeds \[1\]'):
    quality.pool_summaries(now, saved(runs[:1], [1]))
  with pytest.raises(ValueError, match='method'):  # trained from another base config
    quality.pool_summaries(now, saved(runs[:1], [0], {**config, 'method': 'sve_lora'}))


def test_quality_ensemble_table_reads_members_diversity_and_human_agreement():
  def result(members_nll, rho_mi):
    return {'num_members': 4, 'params': {'trainable_total': 10, 'overhead': 0.01},
            'test': {'accuracy': 0.7, 'nll': 0.6}, 'validation': {'nll': 0.65},
            'members_mean': {'accuracy': 0.68, 'nll': members_nll},
            'diversity': {'disagreement': 0.1, 'mutual_information': 0.02},
            'human_disagreement': {'entropy': 0.3, 'mutual_information': rho_mi,
                                   'one_minus_max_prob': 0.31}}
  summary = quality.summarise({'sve': [result(0.75, 0.2), result(0.6, float('nan'))]})
  # The ratio is per run, then averaged: (0.6/0.75 + 0.6/0.6) / 2, not 0.6 / mean(members).
  assert summary['sve']['nll_over_members']['mean'] == pytest.approx((0.8 + 1.0) / 2)
  # A NaN (MI of a single model) is left out of the mean, not propagated.
  assert summary['sve']['rho_mi'] == {'mean': pytest.approx(0.2), 'std': 0.0}
  table = quality.ensemble_table(summary)
  assert ('| sve | 2 | 0.6500 ± 0.0000 | 0.6800 ± 0.0000 | 0.6750 ± 0.0750 | 0.9000 ± 0.1000 |'
          in table)
  # A data set without annotator agreement: the ρ cells say so instead of inventing a value.
  no_people = result(0.75, 0.2)
  del no_people['human_disagreement']
  assert quality.ensemble_table(quality.summarise({'svf': [no_people]})).endswith(
      '| 0.1000 | 0.0200 | – | – | – |')



def test_quality_ood_sets_table_reads_every_set_and_the_feature_scores():
  def run(msp, mahalanobis):
    return {'num_members': 4, 'params': {'trainable_total': 10, 'overhead': 0.01},
            'ood': {'dataset': 'ood_text', 'auroc_msp': msp},
            'ood_sets': {'ood_text': {'auroc_msp': msp, 'auroc_mahalanobis': mahalanobis},
                         'fortunes_text': {'auroc_msp': msp - 0.1}}}
  one_set = {'num_members': 1, 'params': {'trainable_total': 5, 'overhead': 0.},
             'ood': {'dataset': 'ood_text', 'auroc_msp': 0.8, 'auroc_mi': 0.5}}
  runs = {'sve': [run(0.6, 0.9), run(0.7, 0.95)], 'single_ft': [one_set]}
  columns = quality.ood_set_columns(runs)
  summary = quality.summarise(runs, columns)
  assert summary['sve']['ood_text/auroc_msp'] == {'mean': pytest.approx(0.65),
                                                  'std': pytest.approx(0.05)}
  assert summary['sve']['fortunes_text/auroc_msp']['mean'] == pytest.approx(0.55)
  assert summary['sve']['ood_text/auroc_mahalanobis']['mean'] == pytest.approx(0.925)
  assert 'fortunes_text/auroc_msp' not in summary['single_ft']  # it scored one set
  table = quality.ood_sets_table(summary, columns).splitlines()
  assert table[0].startswith('| method | OOD set | AUROC MSP |')
  assert table[2:] == [
      '| sve | ood_text | 0.6500 ± 0.0500 | – | – | 0.9250 ± 0.0250 | – |',
      '| sve | fortunes_text | 0.5500 ± 0.0500 | – | – | – | – |',
      '| single_ft | ood_text | 0.8000 | – | 0.5000 | – | – |']


def test_quality_zero_shot_row_is_the_pretrained_model_read_from_each_seeds_run():
  def run(zero_shot_accuracy):
    # As results.json has it: the zero-shot OOD scores do not repeat the set's name.
    return {'num_members': 4, 'params': {'trainable_total': 10, 'overhead': 0.01},
            'test': {'accuracy': 0.7, 'nll': 0.6},
            'ood': {'dataset': 'ood_text', 'auroc_msp': 0.6},
            'zero_shot': {'test': {'accuracy': zero_shot_accuracy, 'nll': 2.9},
                          'ood': {'auroc_msp': 0.55}}}
  runs = {'sve': [run(0.30), run(0.40)], 'single_svf': [run(0.30), run(0.40)]}
  (name, seeds), = quality.zero_shot_runs(runs).items()
  runs_and_zero_shot = {**runs, name: seeds}
  columns = quality.ood_set_columns(runs_and_zero_shot)
  summary = quality.summarise(runs_and_zero_shot, columns)
  assert summary['zero_shot']['ood_text/auroc_msp']['mean'] == pytest.approx(0.55)
  summary = quality.summarise(runs_and_zero_shot)
  assert summary['zero_shot']['accuracy'] == {'mean': pytest.approx(0.35),
                                              'std': pytest.approx(0.05)}
  assert summary['zero_shot']['auroc_msp']['mean'] == pytest.approx(0.55)
  assert '| zero_shot | 1 | 0 | – | 0.3500 ± 0.0500 | 2.9000 ± 0.0000 |' in (
      quality.markdown_table(summary))
  # Encoders with a new head have no zero-shot model: no row.
  del runs['sve'][0]['zero_shot'], runs['single_svf'][0]['zero_shot']
  assert quality.zero_shot_runs(runs) == {}


@pytest.mark.slow
def test_sweep_runs_a_grid_reads_averaging_modes_from_shared_runs_and_resumes(
    tiny_bert_folder, shared_data_dir, tmp_path, monkeypatch):
  import json
  import os

  from benchmarks import sweep
  from sve_jax.train import run as run_lib
  from conftest import tiny_train_config
  config = tiny_train_config(tiny_bert_folder, shared_data_dir, **{
      'ood.name': '', 'max_steps': 2, 'eval_every_steps': 1, 'data.max_eval_examples': 8})
  wanted = ('base', 'noise_0.1', 'logits_averaging')
  settings = tuple(s for s in sweep.settings_for('diversity') if s.name in wanted)
  root, out = str(tmp_path / 'runs'), str(tmp_path / 'sweep')
  runs = sweep.run_grid(config, settings, root, seeds=range(1))
  summary = sweep.write_outputs(out, config, settings, runs, root)
  with open(out + '.json') as f:
    saved = json.load(f)
  rows = saved['settings']
  assert set(rows) == set(wanted) and saved['selected_on'] == 'val_nll'
  assert saved['seed_ids'] == [0]  # as each run's own config records its seed
  # Selection is by validation NLL, never test.
  assert saved['best'] == min(rows, key=lambda name: rows[name]['val_nll']['mean'])
  base = runs['base'][0]
  assert base['config']['noise_std'] == 0.01
  assert runs['noise_0.1'][0]['config']['noise_std'] == 0.1
  assert rows['base']['val_members_nll']['mean'] == pytest.approx(
      base['validation']['members_mean_nll'])
  assert rows['base']['s_change']['mean'] == pytest.approx(base['singular_value_change'])
  # Logit averaging is read from the base run, not retrained.
  assert not os.path.exists(os.path.join(root, 'logits_averaging'))
  by_logits = base['ensemble_modes']['logits']
  assert rows['logits_averaging']['val_nll']['mean'] == pytest.approx(
      by_logits['validation']['nll'])
  assert rows['logits_averaging']['accuracy']['mean'] == pytest.approx(
      by_logits['test']['accuracy'])
  assert rows['logits_averaging']['members_accuracy'] == rows['base']['members_accuracy']
  # Learning curves: validation at steps 1 and 2, as each run's metrics.jsonl says.
  records = [json.loads(line) for line in open(os.path.join(root, 'base', 'seed_0',
                                                            'metrics.jsonl'))]
  val = [r for r in records if 'val_nll' in r]
  assert summary['learning_curves']['base'] == {
      'step': [1, 2], 'val_nll': [r['val_nll'] for r in val],
      'val_accuracy': [r['val_accuracy'] for r in val]}
  assert set(summary['learning_curves']) == {'base', 'noise_0.1'}
  assert os.path.getsize(out + '.png') > 10_000
  assert not list(tmp_path.glob('sweep_vs_*.png'))  # these settings differ in several knobs
  assert '**' + saved['best'] + '**' in sweep.markdown_table(summary)

  # A second sweep reads the finished runs back: nothing trains.
  def no_training(*args, **kwargs):
    raise AssertionError('a finished setting was trained again')

  monkeypatch.setattr(run_lib, 'run', no_training)
  again = sweep.run_grid(config, settings, root, seeds=range(1))
  assert again['base'][0]['test'] == base['test']
  with pytest.raises(ValueError, match="--grid='nope' is not a preset"):
    sweep.settings_for('nope')


def test_a_benchmark_command_reports_a_bad_flag_value_in_one_line_with_status_2():
  import subprocess
  import sys
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.sweep', '--grid=nope',
                         '--config=configs/default.py'], capture_output=True, text=True,
                        timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error: --grid='nope' is not a preset")
  assert 'Traceback' not in proc.stderr


def test_sweep_curves_carry_the_ood_aurocs_logged_at_validation_into_a_third_panel(tmp_path):
  import json

  from PIL import Image

  from benchmarks import sweep
  for seed, shift in ((0, 0.), (1, 0.1)):
    run = tmp_path / f'seed_{seed}'
    run.mkdir()
    with open(run / 'metrics.jsonl', 'w') as f:
      for step in (2, 4):
        f.write(json.dumps({'step': step, 'loss': 1.}) + '\n')
        f.write(json.dumps({'step': step, 'val_nll': step + shift, 'val_accuracy': 0.5,
                            'ood_auroc_msp': 0.6 + shift, 'ood_auroc_entropy': 0.6,
                            'ood_auroc_mi': 0.7 + shift}) + '\n')
  curves = [sweep.learning_curve(str(tmp_path / f'seed_{k}')) for k in (0, 1)]
  assert curves[1]['ood_auroc_mi'] == pytest.approx([0.8, 0.8])
  mean = sweep.mean_curve(curves)
  assert mean['step'] == [2, 4] and mean['ood_auroc_msp'] == pytest.approx([0.65, 0.65])
  assert mean['val_nll'] == pytest.approx([2.05, 4.05])
  plain = {k: v for k, v in mean.items() if not k.startswith('ood_')}
  heights = {}
  for name, curve in (('ood', mean), ('plain', plain)):
    path = sweep.plot_learning_curves(str(tmp_path / f'{name}.png'), {'base': curve})
    heights[name] = Image.open(path).size[1]
  assert heights['ood'] > heights['plain']  # the OOD panel


def test_sweep_plots_a_grid_that_varies_one_number_against_it(tmp_path):
  from PIL import Image

  from benchmarks import sweep
  stat = lambda mean: {'mean': mean, 'std': 0.01}
  rows = {f'members_{m}': {'seeds': 3, 'overrides': {'method': 'sve', 'num_members': m},
                           'val_nll': stat(0.6 - 0.01 * m), 'nll': stat(0.6),
                           'ece_ts': stat(0.04), 'disagreement': stat(0.1), 'mi': stat(0.02),
                           'auroc_mi': stat(0.7)}
          for m in (16, 1, 4)}
  assert sweep.grid_axis(rows) == 'num_members'
  # A choice between names, several knobs at once, or one setting: no axis.
  attention = {name: {'overrides': {'method': 'sve', 'sve_targets': name}}
               for name in ('all', 'attention')}
  assert sweep.grid_axis(attention) is None
  both = {'a': {'overrides': {'noise_std': 0.1}}, 'b': {'overrides': {'head_init_std': 0.03}}}
  assert sweep.grid_axis(both) is None
  assert sweep.grid_axis({'members_4': rows['members_4']}) is None
  lr = {f'lr_{v:g}': {'overrides': {'method': 'single_svf', 'optim.learning_rate': v}}
        for v in (1e-3, 1e-2)}
  assert sweep.grid_axis(lr) == 'optim.learning_rate'
  path = sweep.plot_against_axis(str(tmp_path / 'vs.png'), rows, 'num_members')
  four_panels = Image.open(path).size[1]
  del rows['members_4']['auroc_mi'], rows['members_1']['auroc_mi'], rows['members_16']['auroc_mi']
  three_panels = Image.open(sweep.plot_against_axis(str(tmp_path / 'vs3.png'), rows,
                                                    'num_members')).size[1]
  assert four_panels > three_panels  # a column no row has gets no panel


def test_sweep_keeps_the_rows_and_curves_of_settings_it_did_not_run_from_the_saved_summary(
    tmp_path):
  import json

  from benchmarks import sweep
  config = {'method': 'sve', 'optim': {'learning_rate': 1e-2},
            'data': {'data_dir': 'a', 'max_train_examples': 8000},
            'ood': {'feature_scores': False, 'extra_names': []}}
  row = lambda nll: {'val_nll': {'mean': nll, 'std': 0.}}
  curve = lambda nll: {'step': [250], 'val_nll': [nll], 'val_accuracy': [0.7]}
  previous = {'config': config, 'selected_on': 'val_nll', 'best': 'first',
              'settings': {'first': row(0.56), 'second': row(0.60), 'third': row(0.70)},
              'learning_curves': {'first': curve(0.56), 'second': curve(0.60)}}
  # This invocation ran `third` again (its new row wins) and `fourth`; it scored OOD
  # differently and keeps its data elsewhere, which does not change what is trained.
  now = {**config, 'data': {**config['data'], 'data_dir': 'b'},
         'ood': {'feature_scores': True, 'extra_names': ['fortunes_text']}}
  summary = {'selected_on': 'val_nll', 'best': 'fourth',
             'settings': {'fourth': row(0.55), 'third': row(0.58)},
             'learning_curves': {'fourth': curve(0.55), 'third': curve(0.58)}}
  order = ('first', 'second', 'third', 'fourth')
  merged = sweep.keep_previous(summary, previous, now, order)
  assert list(merged['settings']) == list(order)
  assert list(merged['learning_curves']) == list(order)
  assert merged['settings']['third'] == row(0.58)
  assert merged['settings']['first'] == {**row(0.56), 'kept_from_previous': True}
  assert 'kept_from_previous' not in merged['settings']['fourth']
  assert merged['best'] == 'fourth'  # lowest validation NLL over kept and new rows
  # A base config that trains differently refuses, naming the key.
  other = {**config, 'optim': {'learning_rate': 1e-3}}
  with pytest.raises(ValueError, match=r"optim\.learning_rate"):
    sweep.keep_previous(summary, {**previous, 'config': other}, now, order)
  assert json.loads(json.dumps(merged)) == merged


def test_sweep_pools_seed_summaries_exactly_and_refuses_overlapping_seeds():
  from benchmarks import sweep
  config = {'method': 'sve', 'optim': {'learning_rate': 1e-2}, 'data': {'data_dir': 'a'}}
  val_nll = {'members_1': [0.60, 0.62, 0.65], 'members_4': [0.57, 0.58, 0.61]}
  curve_nll = {'members_1': [0.9, 0.8, 0.7], 'members_4': [0.7, 0.6, 0.5]}
  def summary_of(seeds, settings=('members_1', 'members_4')):
    rows = {name: {'seeds': len(seeds), 'overrides': {'num_members': int(name[-1])},
                   'val_nll': {'mean': float(np.mean([val_nll[name][k] for k in seeds])),
                               'std': float(np.std([val_nll[name][k] for k in seeds]))}}
            for name in settings}
    curves = {name: {'step': [100, 200], 'val_nll': [
        float(np.mean([curve_nll[name][k] for k in seeds]))] * 2} for name in settings}
    return {'config': config, 'seed_ids': list(seeds), 'selected_on': 'val_nll',
            'best': sweep.best_setting(rows), 'settings': rows, 'learning_curves': curves}
  order = ('members_1', 'members_4')
  # Seed 0 alone (an older summary, without seed_ids), then seeds 1-2 pooled with it.
  seed_0 = {k: v for k, v in summary_of([0]).items() if k != 'seed_ids'}
  pooled = sweep.pool_sweeps(summary_of([1, 2]), seed_0, config, order)
  every_seed = summary_of([0, 1, 2])
  assert pooled['seed_ids'] == [0, 1, 2] and pooled['best'] == 'members_4'
  for name in order:
    row = pooled['settings'][name]
    assert row['seeds'] == 3 and row['overrides'] == {'num_members': int(name[-1])}
    assert row['val_nll']['mean'] == pytest.approx(every_seed['settings'][name]['val_nll']['mean'])
    assert row['val_nll']['std'] == pytest.approx(every_seed['settings'][name]['val_nll']['std'])
    assert pooled['learning_curves'][name]['val_nll'] == pytest.approx(
        every_seed['learning_curves'][name]['val_nll'])
  # A setting only the new seeds ran is kept as it is.
  only_new = sweep.pool_sweeps(summary_of([1, 2]), summary_of([0], ('members_1',)), config,
                               order)
  assert only_new['settings']['members_4'] == summary_of([1, 2])['settings']['members_4']
  # members_4 has the lower mean, but over 2 seeds against members_1's 3: not comparable.
  assert only_new['best'] == 'members_1'
  with pytest.raises(ValueError, match=r'both summaries hold seeds \[1\]'):
    sweep.pool_sweeps(summary_of([1, 2]), summary_of([0, 1]), config, order)
  with pytest.raises(ValueError, match=r'optim\.learning_rate'):
    sweep.pool_sweeps(summary_of([1, 2]), {**seed_0, 'config': {
        **config, 'optim': {'learning_rate': 1e-3}}}, config, order)


@pytest.mark.slow
def test_lite_convs_benchmark_covers_every_depthwise_shape_and_compares_equal_outputs():
  from benchmarks import lite_convs
  from sve_jax.models import efficientnet_lite
  shapes = lite_convs.depthwise_shapes(64)
  # Independent value: the first block sees the stem's 32 × 32 × 32 output (64 px, stride 2).
  assert shapes[0] == (32, 32, 3, 1)
  expected = {(spec.in_features * spec.expand_ratio, spec.kernel_size, spec.stride)
              for spec in efficientnet_lite.lite0_blocks()}
  assert {shape[1:] for shape in shapes} == expected
  # (The whole network's equality is test_efficientnet_lite's, against torch.)
  rows = lite_convs.layer_rows(batch=2, image_size=0, repeats=1,
                              shapes=[(9, 6, 3, 2), (7, 6, 5, 1)])
  assert [r['kind'] for r in rows] == ['forward', 'gradient'] * 2
  assert all(r['max_abs_diff'] < 1e-4 and r['grouped_s'] > 0 and r['ours_s'] > 0
             for r in rows)
  assert len(lite_convs.markdown_table(rows).splitlines()) == 2 + len(rows)


def _shift_results(accuracy_drop, ece, corruptions=('fog', 'contrast')):
  """A results.json with a shift section: accuracy 0.9 clean, falling by ``accuracy_drop``
  per severity (fog twice as fast as contrast, on average ``accuracy_drop``)."""
  from sve_jax.eval import shift
  def scores(accuracy):
    return {'accuracy': accuracy, 'nll': 1 - accuracy, 'ece': ece, 'entropy': 0.5}
  slopes = dict(zip(corruptions, (4 / 3, 2 / 3)))
  by_name = {name: {s: scores(0.9 - slopes[name] * accuracy_drop * s) for s in (1, 2, 3)}
             for name in corruptions}
  return {'num_members': 4, 'shift': shift.shift_section(
      scores(0.9), by_name, {'fog': 'weather', 'contrast': 'digital'}, num_examples=50)}


def test_shift_benchmark_averages_each_methods_mean_curve_over_seeds(tmp_path):
  from benchmarks import shift as shift_bench
  runs = {'sve': [_shift_results(0.1, 0.05), _shift_results(0.2, 0.07)],
          'single_ft': [_shift_results(0.3, 0.2)]}
  for method, results in runs.items():
    for seed, r in enumerate(results):
      folder = tmp_path / 'runs' / method / f'seed_{seed}'
      folder.mkdir(parents=True)
      (folder / 'results.json').write_text(json.dumps(r))
  (tmp_path / 'runs' / 'lora_ensemble' / 'seed_0').mkdir(parents=True)  # unfinished: skipped
  read = shift_bench.read_runs(str(tmp_path / 'runs'))
  assert list(read) == ['single_ft', 'sve'] and len(read['sve']) == 2
  summary = shift_bench.write_shift(read, 'tiny', str(tmp_path / 'out'))
  sve = summary['sve']
  assert sve['seeds'] == 2 and sve['corruptions'] == ['contrast', 'fog']
  assert sve['curve'][0]['accuracy'] == {'mean': pytest.approx(0.9), 'std': pytest.approx(0)}
  # Severity 2: each seed's mean over the two corruptions is 0.9 - 2·drop; seeds 0.1, 0.2.
  assert sve['curve'][2]['accuracy']['mean'] == pytest.approx(np.mean([0.7, 0.5]))
  assert sve['curve'][2]['accuracy']['std'] == pytest.approx(np.std([0.7, 0.5]))
  assert sve['curve'][3]['ece']['mean'] == pytest.approx(0.06)
  assert summary['single_ft']['curve'][1]['accuracy']['mean'] == pytest.approx(0.6)
  with open(tmp_path / 'out' / 'shift_tiny.json') as f:
    assert json.load(f)['methods']['sve']['curve']['2']['accuracy']['mean'] == pytest.approx(0.6)
  assert (tmp_path / 'out' / 'shift_tiny.png').read_bytes()[:4] == b'\x89PNG'
  table = shift_bench.markdown_table(summary).splitlines()
  assert table[0] == ('| method | seeds | acc clean | acc s1 | acc s2 | acc s3 | ECE clean | '
                      'ECE s1 | ECE s2 | ECE s3 |')
  assert table[3].startswith('| sve | 2 | 0.9000 | 0.7500 | 0.6000 | 0.4500 | 0.0600 |')
  assert shift_bench.write_shift({'sve': [{'num_members': 4}]}, 'none', str(tmp_path)) == {}
  assert not (tmp_path / 'shift_none.json').exists()


def test_top_blocks_benchmark_depths_and_ratios_to_one_model_and_full_sve():
  from benchmarks import top_blocks
  assert top_blocks.depths(6) == (6, 3, 2) and top_blocks.depths(30) == (30, 15, 8)
  medians = {'one model': 2., 'M=4 K=6': 8., 'M=4 K=2': 3.}
  full = lambda name: None if name == 'one model' else name.split(' K=')[0] + ' K=6'
  rows = top_blocks.ratios(medians, 'one model', full)
  assert rows['M=4 K=2'] == {'s': 3., 'vs_one_model': 1.5, 'vs_full_sve': 3. / 8.}
  assert rows['one model']['vs_full_sve'] is None
  table = top_blocks.markdown({'train_step': rows}).splitlines()
  assert table[-1] == '| M=4 K=2 | 3000.0 | 1.50 | 0.38 |'


def test_cpu_info_reads_the_isa_extensions_the_kernel_reports(monkeypatch):
  from benchmarks import common
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_max_isa=AVX2')
  info = common.cpu_info()
  with open('/proc/cpuinfo') as f:
    flags = set(next(line for line in f if line.startswith('flags')).split(':')[1].split())
  assert info['avx2'] == ('avx2' in flags) and info['avx512f'] == ('avx512f' in flags)
  assert info['model'] and info['env'] == {'XLA_FLAGS': '--xla_cpu_max_isa=AVX2'}


def _recipe_sweep_summary(config_json, val_nll_by_setting, seeds=None):
  """A recipe sweep's summary as benchmarks.sweep writes it: each row its setting's
  overrides and mean validation NLL (the grid's own settings, so names and overrides agree)."""
  from benchmarks import sweep
  seeds = seeds or {}
  rows = {}
  for setting in sweep.settings_for('recipe'):
    if setting.name in val_nll_by_setting:
      rows[setting.name] = {'overrides': dict(setting.overrides), 'mode': None, 'shares': None,
                            'seeds': seeds.get(setting.name, 1),
                            'val_nll': {'mean': val_nll_by_setting[setting.name], 'std': 0.0}}
  return {'config': config_json, 'selected_on': 'val_nll', 'settings': rows}


def test_recipe_takes_each_familys_lowest_validation_nll_and_flags_a_choice_at_its_grid_edge():
  from benchmarks import recipe
  summary = _recipe_sweep_summary({}, {
      'svf_lr_0.001': 0.52, 'svf_lr_0.01': 0.49, 'svf_lr_0.03': 1.29,   # inside the grid
      'ft_lr_1e-05': 0.98, 'ft_lr_5e-05': 0.59, 'ft_lr_0.0005': 0.50,   # at its edge
      'lora_lr_0.0001': 0.87, 'lora_lr_0.0003': 0.57, 'lora_lr_0.001': 0.40},
      seeds={'lora_lr_0.001': 0})  # fewer seeds than the others: never chosen
  summary['settings']['logits_averaging'] = {'overrides': {'method': 'sve'}, 'mode': 'logits',
                                             'shares': 'base', 'val_nll': {'mean': 0.1}}
  choices = {c.setting: c for c in recipe.recipe_choices(summary)}
  assert set(choices) == {'svf_lr_0.01', 'ft_lr_0.0005', 'lora_lr_0.0003'}
  assert choices['svf_lr_0.01'].overrides == {'optim.learning_rate': 0.01}
  assert choices['ft_lr_0.0005'].overrides == {'optim.full_finetune_learning_rate': 5e-4}
  assert choices['lora_lr_0.0003'].overrides == {'optim.lora_learning_rate': 3e-4}
  assert choices['lora_lr_0.0003'].val_nll == 0.57
  assert [c.at_grid_edge for c in choices.values()] == [False, True, False]
  with pytest.raises(ValueError, match='not a sweep summary'):
    recipe.recipe_choices({'methods': {}})


def test_quality_recipe_from_sets_the_chosen_rates_and_refuses_another_base_config():
  from configs import default
  config = default.get_config()
  base = json.loads(config.to_json_best_effort())
  summary = _recipe_sweep_summary(base, {'svf_lr_0.001': 0.6, 'svf_lr_0.01': 0.5,
                                         'svf_lr_0.03': 0.7, 'ft_lr_1e-05': 0.8,
                                         'ft_lr_5e-05': 0.7, 'ft_lr_0.0005': 0.9})
  chosen = quality.with_recipe(config, summary, 'sweep.json')
  assert chosen.optim.learning_rate == 0.01
  assert chosen.optim.full_finetune_learning_rate == 5e-5
  assert chosen.optim.lora_learning_rate == config.optim.lora_learning_rate  # not swept
  assert config.optim.learning_rate == default.get_config().optim.learning_rate  # a copy
  # The sweep's own rates may differ from the config's; anything else that trains may not.
  summary['config']['optim']['learning_rate'] = 3e-2
  assert quality.with_recipe(config, summary, 'sweep.json').optim.learning_rate == 0.01
  summary['config']['num_epochs'] = config.num_epochs + 1
  with pytest.raises(ValueError, match=r"--recipe_from=sweep.json: the sweep was trained from "
                     r"another base config \(differs in \['num_epochs'\]\)"):
    quality.with_recipe(config, summary, 'sweep.json')
