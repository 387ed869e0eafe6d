"""A decoder LLM through train.py: classification by prompt with the LM's own head and the
zero-shot row in results.json."""
import json
import os

import jax
import numpy as np
import pytest

import train
from conftest import tiny_train_config
from sve_jax import models
from sve_jax.eval import report

VERBALIZER = (' negative', ' neutral', ' positive')
pytestmark = pytest.mark.e2e
LLAMA = {'model.name': 'llama', 'model.prompt': 'Tweet: {text}\nSentiment:',
         'model.verbalizer': VERBALIZER}


def test_train_py_runs_the_decoder_and_reports_the_zero_shot_row(tiny_llm_gguf,
                                                                 shared_data_dir, tmp_path):
  config = tiny_train_config(tiny_llm_gguf, shared_data_dir, **LLAMA, max_steps=2,
                             steps_per_execution=1)
  workdir = str(tmp_path / 'run')
  train.run(config, workdir, 'train')
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

