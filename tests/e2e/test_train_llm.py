"""A decoder LLM through train.py: classification by prompt with the LM's own head, the
zero-shot row in results.json, and predictions on new texts."""
import json
import os

import jax
import numpy as np
import pytest

import train
from conftest import prediction_scores, read_csv_rows, tiny_train_config, write_csv
from sve_jax import models
from sve_jax.data import transforms
from sve_jax.eval import report
from sve_jax.train import run as run_lib
from sve_jax.train.predict import PredictRequest

VERBALIZER = (' negative', ' neutral', ' positive')
pytestmark = pytest.mark.e2e
LLAMA = {'model.name': 'llama', 'model.prompt': 'Tweet: {text}\nSentiment:',
         'model.verbalizer': VERBALIZER}


@pytest.fixture(scope='module')
def llm_run(tiny_llm_gguf, shared_data_dir, tmp_path_factory):
  """A two-step run of the tiny random decoder (M = 2): ``(config, workdir)``."""
  config = tiny_train_config(tiny_llm_gguf, shared_data_dir, **LLAMA, max_steps=2,
                             steps_per_execution=1)
  workdir = str(tmp_path_factory.mktemp('llm') / 'run')
  train.run(config, workdir, 'train')
  return config, workdir


def test_train_py_runs_the_decoder_and_reports_the_zero_shot_row(llm_run):
  config, workdir = llm_run
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['num_members'] == 2 and saved['ood']['dataset'] == 'ood_text'
  zero_shot = saved['zero_shot']
  assert set(zero_shot) == {'validation', 'test', 'test_temperature_scaled', 'ood'}
  assert set(zero_shot['test']) == {'accuracy', 'nll', 'brier', 'ece', 'temperature'}
  backbone = models.load_backbone(config.model, num_classes=3)
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert max(r['step'] for r in records) == 2
  assert saved['params']['backbone'] == sum(np.size(x) for x in jax.tree.leaves(
      backbone.params))
  assert 'zero-shot test (raw)' in report.summary_table(saved)


def test_predict_scores_new_texts_by_prompt_as_the_run_scored_its_test_split(llm_run,
                                                                            tmp_path):
  config, workdir = llm_run
  dataset, sources, _ = run_lib.load_data(config, workdir)
  test = [sources['test'][i] for i in range(len(sources['test']))]
  texts = transforms.decode_texts([e[dataset.input_key] for e in test])
  labels = [dataset.label_names[int(e[dataset.label_key])] for e in test]
  source, output = tmp_path / 'tweets.csv', tmp_path / 'predictions.csv'
  write_csv(source, ['text', 'label'], zip(texts, labels))
  train.run(config, workdir, 'predict', PredictRequest(str(source), str(output)))
  rows = read_csv_rows(output)
  names = ('negative', 'neutral', 'positive')
  assert tuple(dataset.label_names) == names
  assert list(rows[0]) == ['text', 'label', 'prediction', 'confidence',
                           *(f'p_{n}' for n in names), 'entropy', 'mutual_information',
                           'votes', 'review']
  assert [r['text'] for r in rows] == texts
  assert len({r['p_positive'] for r in rows}) > 1  # the texts matter, not only the prompt
  # The prompt and verbaliser applied as in training: the run's own test scores.
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  scores = prediction_scores(rows, labels, names)
  assert scores == pytest.approx({k: results['test'][k] for k in scores}, abs=1e-4)
  assert results['predict']['accuracy'] == pytest.approx(scores['accuracy'])

