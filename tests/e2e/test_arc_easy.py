"""configs/arc_easy_llama.py through train.py on stand-ins: ARC-Easy prepared by the real tfds
builder from a few local questions (tests/arc_files.py) and a tiny random Llama in a hub cache,
by `hf-hub:` id as the config loads its 8B model."""
import json
import os
import subprocess
import sys

import pytest
import tokenizers

from arc_files import prepare, stand_in_rows
from conftest import ROOT
from hub_cache import add_repo
from llama_files import MERGES, random_hf_state, vocabulary, write_hf_folder

pytestmark = pytest.mark.e2e
LETTERS = 'ABCDE'


def _letter_tokenizer():
  """The tiny byte-level vocabulary plus 'ĠA' ... 'ĠE': the config's label words ' A' ... ' E'
  are one distinct token each, as in Llama 3's vocabulary."""
  merges = list(MERGES) + [f'Ġ {c}' for c in LETTERS]
  vocab = vocabulary() + [f'Ġ{c}' for c in LETTERS]
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(
      {t: i for i, t in enumerate(vocab)}, [tuple(m.split(' ')) for m in merges]))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  return tokenizer, len(vocab)


def test_arc_easy_config_trains_and_reports_the_zero_shot_row(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  prepare(data_dir, {'train': stand_in_rows('train', 8), 'validation':
                     stand_in_rows('validation', 6), 'test': stand_in_rows('test', 7)})
  tokenizer, vocab_size = _letter_tokenizer()
  folder = write_hf_folder(tmp_path / 'tiny', random_hf_state(seed=3, vocab_size=vocab_size),
                           tokenizer, shards=2)
  add_repo(tmp_path / 'hub', 'someone/tiny-llama', folder)
  workdir = str(tmp_path / 'run')
  overrides = {'model.path': 'hf-hub:someone/tiny-llama', 'data.data_dir': data_dir,
               'model.max_length': 48, 'num_members': 2, 'batch_size': 4,
               'eval_batch_size': 4, 'num_epochs': 1, 'log_every_steps': 1}
  env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(tmp_path / 'hub'),
         'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'train.py'),
       f'--config={os.path.join(ROOT, "configs", "arc_easy_llama.py")}',
       f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in overrides.items()],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['method'] == 'sve' and saved['num_members'] == 2
  config = saved['config']
  assert config['model']['verbalizer'] == [' A', ' B', ' C', ' D', ' E']
  assert (config['model']['dtype'], config['model']['remat']) == ('bfloat16', True)
  assert config['mesh']['frozen'] == 'fsdp' and config['execution'] == 'factored'
  zero_shot = saved['zero_shot']
  assert set(zero_shot) == {'validation', 'test', 'test_temperature_scaled'}
  for section in (zero_shot['test'], saved['test']):
    # 7 test questions: accuracy in sevenths; the masked letters give no NaN or infinity.
    assert round(section['accuracy'] * 7, 6) == round(section['accuracy'] * 7)
    assert 0 < section['nll'] < 100 and 0 <= section['ece'] <= 1
    assert 0 <= section['brier'] <= 2
  assert saved['params']['overhead'] > 0
