"""Every README shell command that runs train.py runs, on small local data, and reports
(the decoder LLM's commands: test_readme_llm_commands.py).

Each command is taken from README.md's ```bash blocks as written and run as a subprocess
from the checkout's root. Nothing in it is rewritten except what is listed here:

* the interpreter (`python`, `.venv/bin/python`) is this test's `sys.executable`;
* `--workdir=X` and `--output=X` go under a temporary folder (the tfds data next to it,
  shared by the runs); commands run in README order, so a `--mode=predict` command finds the
  run its README section trained before it;
* paths the README shows as a user's own data are replaced by small real local data:
  `PLACEHOLDER_DATA` maps each one to what stands in for it;
* `SHORTEN` is appended: a couple of steps, small batches, eval sets and inputs (32 pixels,
  or a ViT's 2 x 2 patches), and the test session's tfds data folder, so corpora other tests prepared are reused;
* the environment gets `HF_HUB_CACHE` (a hub cache holding the offline MiniLM files as
  `sentence-transformers/all-MiniLM-L6-v2`) and `SVE_JAX_CACHE` (EfficientNet-Lite0
  converted once), which a user's machine has after the README's setup steps.

A README command that no longer parses, names a missing config key or option, or fails to
train makes this test fail.
"""
import glob
import os
import re

import pytest

from conftest import ROOT
from readme_commands import COMMANDS, PLACEHOLDER_DATA, README, is_llm_command, run_and_check

pytestmark = pytest.mark.e2e


def test_the_readme_has_the_commands_this_test_runs():
  # The extraction found the commands the issue names (it must never silently find none).
  assert any('--config.data.options.file=/data/reviews.csv' in c for c in COMMANDS)
  assert any('--config.model.path=sentence-transformers/' in c for c in COMMANDS)
  assert set(PLACEHOLDER_DATA) <= {p for c in COMMANDS for p in PLACEHOLDER_DATA if p in c}
  assert any('--mode=predict' in c for c in COMMANDS)
  assert sum(map(is_llm_command, COMMANDS)) == 3  # the rest run in test_readme_llm_commands


def test_the_readme_config_table_lists_every_config():
  configs = set()
  for path in glob.glob(os.path.join(ROOT, 'configs', '*.py')):
    with open(path, encoding='utf-8') as f:
      if '\ndef get_config(' in f.read():
        configs.add(os.path.basename(path))
  with open(README, encoding='utf-8') as f:
    rows = re.findall(r'^\| `(\w+\.py)` \|', f.read(), flags=re.M)
  assert 'default.py' in configs and sorted(rows) == sorted(configs)


@pytest.mark.parametrize('command', [c for c in COMMANDS if not is_llm_command(c)],
                         ids=lambda c: re.search(r'--workdir=(\S+)', c)[1])
def test_readme_command_trains_and_writes_results(command, local_data, user_caches,
                                                  shared_data_dir, tmp_path_factory):
  run_and_check(command, local_data, user_caches, shared_data_dir,
                str(tmp_path_factory.getbasetemp() / 'readme_runs'))
