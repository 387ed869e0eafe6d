"""The README's tunix example (examples/tunix_tweets.py) runs as written and reports.

The command is taken from README.md: the ```bash block line that starts with
``python examples/tunix_tweets.py``. It runs on the real Gemma 3 270M (the offline GGUF
packages) with only these changes: ``python`` is this interpreter, ``--workdir`` moves under
pytest's temporary folder, the tweets are prepared in the session's shared ``data_dir``, and
:data:`SHORTEN` is appended (2 steps of 8 tweets, 2 members, 8 test tweets, 32-token
prompts).
"""
import json
import math
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT
from sve_jax import tree as tree_lib

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

README = os.path.join(ROOT, 'README.md')
SCRIPT = 'examples/tunix_tweets.py'
SHORTEN = ['--steps=2', '--members=2', '--batch_size=8', '--train_examples=8',
           '--eval_examples=8', '--eval_batch_size=8', '--max_length=32']
MEMBERS, STEPS = 2, 2
#: Gemma 3 270M's published shape (Google's model card / its GGUF metadata), not read from
#: the code under test: layers, width, query heads, kv heads, head width, MLP width.
LAYERS, D, HEADS, KV_HEADS, HEAD_DIM, FFN = 18, 640, 4, 1, 256, 2048


def readme_example_command() -> str:
  """The README's ```bash line running the example, continuation lines joined."""
  text = open(README, encoding='utf-8').read()
  for block in re.findall(r'```bash\n(.*?)```', text, flags=re.S):
    for line in block.replace('\\\n', ' ').splitlines():
      if line.strip().startswith(f'python {SCRIPT}'):
        return line.strip()
  pytest.fail(f'README.md has no ```bash line starting with `python {SCRIPT}`')


def singular_values_per_member() -> int:
  """SVE's trainables of one member, counted by hand: one singular value per rank of each
  projection (q, k, v, o, gate, up, down) of every layer; Gemma's have no biases."""
  q = o = min(D, HEADS * HEAD_DIM)
  k = v = min(D, KV_HEADS * HEAD_DIM)
  return LAYERS * (q + k + v + o + 3 * min(D, FFN))


@pytest.fixture(scope='module')
def example_run(tmp_path_factory, shared_data_dir):
  """``(workdir, results)`` of the README command, shortened."""
  words = shlex.split(readme_example_command())
  assert words[:2] == ['python', SCRIPT], words
  root = tmp_path_factory.mktemp('tunix_example')
  argv = [sys.executable, SCRIPT]
  for word in words[2:]:
    if word.startswith('--workdir='):
      word = '--workdir=' + str(root / word.split('=', 1)[1])
    argv.append(word)
  argv += SHORTEN + [f'--data_dir={shared_data_dir}']
  proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, f'{shlex.join(argv)}\n{proc.stderr[-4000:]}'
  workdir = next(a.split('=', 1)[1] for a in argv if a.startswith('--workdir='))
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert 'SVE, M = 2' in proc.stdout  # the printed table
  return workdir, results


def test_results_hold_valid_scores_of_both_models(example_run):
  _, results = example_run
  assert (results['num_members'], results['trained_steps'], results['resumed_from_step']) == (
      MEMBERS, STEPS, 0)
  assert results['num_test_examples'] == 8 and len(results['train_losses']) == STEPS
  for name in ('zero_shot', 'sve'):
    scores = results[name]
    for key in ('accuracy', 'ece', 'members_mean_accuracy', 'disagreement'):
      assert 0. <= scores[key] <= 1., (name, key, scores[key])
    assert 0. <= scores['nll'] < 50. and math.isfinite(scores['members_mean_nll'])
    # The mean of the members' probabilities has NLL at most their mean NLL (-log is convex).
    assert scores['nll'] <= scores['members_mean_nll'] + 1e-6
    np.testing.assert_allclose(scores['nll_ratio'], scores['nll'] / scores['members_mean_nll'])
  assert len(results['zero_shot']['members']) == 1 and results['zero_shot']['disagreement'] == 0
  assert len(results['sve']['members']) == MEMBERS


def test_trained_members_differ_from_the_zero_shot_model(example_run):
  _, results = example_run
  zero_nll = results['zero_shot']['nll']
  assert all(abs(m['nll'] - zero_nll) > 1e-4 for m in results['sve']['members'])
  assert results['members_relative_change'] > 1e-5  # training moved them from their init


def test_the_checkpoint_holds_only_the_sve_trainables(example_run):
  workdir, _ = example_run
  step = os.path.join(workdir, 'checkpoints', str(STEPS))
  params = tree_lib.flatten_paths(ocp.PyTreeCheckpointer().restore(
      os.path.join(step, 'model_params')))
  assert params and all(path[0] == 'members' for path in params), sorted(params)[:3]
  trainables = sum(np.size(v) for v in params.values())
  assert trainables == MEMBERS * singular_values_per_member()
  # AdamW's two moments of exactly those trainables (its step counters aside).
  optimizer = tree_lib.flatten_paths(ocp.PyTreeCheckpointer().restore(
      os.path.join(step, 'optimizer_state')))
  moments = sum(np.size(v) for v in optimizer.values()
                if np.issubdtype(np.asarray(v).dtype, np.floating) and np.size(v) > 1)
  assert moments == 2 * trainables
