"""The benchmark scripts' arithmetic: ratios and the summary over seeds."""
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
            'learning_rate': 1e-3}
  summary = quality.summarise({'sve': [result(0.7, 0.8), result(0.8, 0.9)]})
  row = summary['sve']
  assert row['accuracy']['mean'] == pytest.approx(0.75)
  assert row['accuracy']['std'] == pytest.approx(np.std([0.7, 0.8]))
  assert row['auroc_mi']['mean'] == pytest.approx(0.85) and row['seeds'] == 2
  table = quality.markdown_table(summary)
  assert '| sve | 4 | 10 | 0.001 | 0.7500 ± 0.0500 |' in table
