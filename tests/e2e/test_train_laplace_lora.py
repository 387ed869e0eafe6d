"""train.py end to end with laplace_lora: two steps of one LoRA, its posterior fitted before
the final evaluation, its M draws reported as members."""
import json
import os

import pytest

import train
from conftest import tiny_train_config

pytestmark = pytest.mark.e2e


def test_laplace_lora_reports_its_posteriors_members(tiny_bert_folder, shared_data_dir,
                                                     tmp_path):
  config = tiny_train_config(tiny_bert_folder, shared_data_dir, **{
      'method': 'laplace_lora', 'max_steps': 2, 'num_epochs': 1,
      'data.max_train_examples': 16, 'data.max_eval_examples': 8,
      'posterior_fit_examples': 8, 'laplace_prior_precisions': (1., 100.)})
  workdir = str(tmp_path / 'run')
  train.run(config, workdir, 'train')
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['method'] == 'laplace_lora' and saved['num_members'] == 2
  assert len(saved['members']) == 2
  # Two draws of the LoRA weights: they disagree somewhere in their probabilities.
  assert 0. <= saved['diversity']['disagreement'] <= 1.
  assert saved['diversity']['mutual_information'] > 0.
  assert {'auroc_msp', 'auroc_mi'} <= set(saved['ood'])
  posterior = saved['posterior']
  assert posterior['prior_precision'] in (1., 100.)
  assert set(posterior['validation_nll']) == {'1', '100'}
  assert (posterior['fit_examples'], posterior['train_examples']) == (8, 16)
  # One LoRA is trained and stored; the members are drawn from its posterior.
  assert saved['params']['trainable_total'] == saved['params']['trainable_per_member']
  assert saved['learning_rate'] == config.optim.lora_learning_rate
