"""A decoder LLM through train.py: classification by prompt with the LM's own head, the methods
that run without a fresh head, the zero-shot row, and the smollm2 config's command line."""
import json
import os

from absl import flags
from ml_collections import config_flags
import jax
import numpy as np
import pytest

import train
from conftest import tiny_train_config
from llama_files import random_hf_state
from llama_files import write_gguf
from sve_jax import methods
from sve_jax import models
from sve_jax.eval import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# First tokens in the tiny vocabulary: 'Ġneg', 'Ġn', 'Ġpos'.
VERBALIZER = (' negative', ' neutral', ' positive')
LLAMA = {'model.name': 'llama', 'model.prompt': 'Tweet: {text}\nSentiment:',
         'model.verbalizer': VERBALIZER}


@pytest.fixture(scope='module')
def tiny_llm(tmp_path_factory):
  """A tiny random decoder as a Q4_1/Q8_0 GGUF file (tests/llama_files.py)."""
  return write_gguf(tmp_path_factory.mktemp('llm') / 'tiny.gguf', random_hf_state(seed=2))


@pytest.fixture(scope='module')
def backbone(tiny_llm):
  spec = {'name': 'llama', 'path': tiny_llm, 'prompt': 'Tweet: {text}\nSentiment:',
          'verbalizer': VERBALIZER, 'max_length': 16, 'dtype': 'float32'}
  return models.load_backbone(spec, num_classes=3)


@pytest.mark.parametrize('method', ['sve', 'single_svf', 'lora_ensemble', 'batch_ensemble',
                                    'single_ft', 'deep_ensemble'])
def test_methods_without_a_fresh_head_start_as_the_pretrained_lm(backbone, method):
  config = {'num_members': 2, 'noise_std': 0., 'execution': 'auto', 'lora_rank': 2,
            'head_init_std': 0.01}
  setup = methods.build(method, backbone, config, jax.random.key(0))
  assert 'head' not in setup.trainables  # every member shares the LM head
  inputs = backbone.tokenize(['i love it', 'meh', 'the worst'])
  expected = np.asarray(backbone.apply(backbone.params, inputs))
  logits = np.asarray(jax.jit(lambda t: setup.forward(setup.frozen, t, inputs, jax.random.key(1),
                                                      False))(setup.trainables))
  assert logits.shape == (methods.get(method).num_members(2), 3, 3)
  for member in logits:  # zero noise, B = 0, r = s = 1, full copies: the backbone itself
    np.testing.assert_allclose(member, expected, atol=2e-4)


def test_mc_dropout_is_refused_on_a_decoder_without_dropout(backbone):
  with pytest.raises(ValueError, match='mc_dropout needs dropout'):
    methods.build('mc_dropout', backbone, {'num_members': 2}, jax.random.key(0))


@pytest.mark.e2e
def test_train_py_runs_the_decoder_and_reports_the_zero_shot_row(tiny_llm, shared_data_dir,
                                                                 tmp_path):
  config = tiny_train_config(tiny_llm, shared_data_dir, **LLAMA, max_steps=2,
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
