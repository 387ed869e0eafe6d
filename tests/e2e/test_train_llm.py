"""A decoder LLM through train.py: classification by prompt with the LM's own head, the
zero-shot row in results.json, and the smollm2 config's prompt and verbaliser on the command
line."""
import json
import os

from absl import flags
from ml_collections import config_flags
import jax
import numpy as np
import pytest

import train
from conftest import tiny_train_config
from sve_jax import models
from sve_jax.eval import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERBALIZER = (' negative', ' neutral', ' positive')
LLAMA = {'model.name': 'llama', 'model.prompt': 'Tweet: {text}\nSentiment:',
         'model.verbalizer': VERBALIZER}


@pytest.mark.e2e
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


def _parse(*overrides):
  argv = ['train.py', f'--config={os.path.join(ROOT, "configs", "smollm2_tweets.py")}',
          *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_smollm2_config_prompt_and_verbaliser_override_from_the_command_line():
  config = _parse()
  assert config.model.name == 'llama' and config.model.path == '' and config.num_members == 4
  assert config.model.verbalizer == VERBALIZER
  config = _parse('--config.model.prompt=Review: {text}\nThe review is',
                  "--config.model.verbalizer=(' bad', ' good')")
  assert config.model.verbalizer == (' bad', ' good')
  assert config.model.prompt == 'Review: {text}\nThe review is'
  models.validate_model_config(config.model)
  with pytest.raises(ValueError, match=r'config\.model\.prompt=.* must contain \{text\}'):
    models.validate_model_config({**config.model.to_dict(), 'prompt': 'no slot'})
  with pytest.raises(ValueError, match=r'config\.model\.verbalizer=\(\) must be a tuple'):
    models.validate_model_config({**config.model.to_dict(), 'verbalizer': ()})
