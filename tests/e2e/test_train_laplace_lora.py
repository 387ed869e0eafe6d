"""train.py end to end with laplace_lora: two steps of one LoRA, its posterior fitted before
the final evaluation, its M draws reported as members; and --mode=predict, which refits the
same posterior from the stored MAP."""
import json
import os

import pytest

import train
from conftest import prediction_scores, read_csv_rows, tiny_train_config, write_csv
from sve_jax.data import transforms
from sve_jax.train import run as run_lib
from sve_jax.train.predict import PredictRequest

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

  # --mode=predict on the test split refits the posterior from the stored MAP, with the same
  # seeded draws: the run's own test scores, not the MAP's.
  dataset, sources, _ = run_lib.load_data(config, workdir)
  test = [sources['test'][i] for i in range(len(sources['test']))]
  texts = transforms.decode_texts([e[dataset.input_key] for e in test])
  labels = [dataset.label_names[int(e[dataset.label_key])] for e in test]
  source, output = tmp_path / 'test.csv', tmp_path / 'predictions.csv'
  write_csv(source, ['text', 'label'], list(zip(texts, labels)))
  train.run(config, workdir, 'predict', PredictRequest(str(source), str(output)))
  rows = read_csv_rows(output)
  assert len(rows[0]['votes'].split('|')) == 2  # the posterior's two draws
  scores = prediction_scores(rows, labels, dataset.label_names)
  assert scores == pytest.approx({k: saved['test'][k] for k in scores}, abs=1e-4)
