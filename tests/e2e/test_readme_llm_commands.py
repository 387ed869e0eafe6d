"""The README's decoder-LLM commands (SmolLM2-135M and Gemma 3 270M, the real GGUF weights)
run as written, on small local data, and report; test_readme_commands.py's docstring says
what is substituted.

A file of their own: they are the slowest README commands, and pytest-xdist gives each file to
one worker, so the two files run side by side.
"""
import re

import pytest

from readme_commands import COMMANDS, is_llm_command, run_and_check

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize('command', [c for c in COMMANDS if is_llm_command(c)],
                         ids=lambda c: re.search(r'--workdir=(\S+)', c)[1])
def test_readme_llm_command_trains_and_writes_results(command, local_data, shared_data_dir,
                                                      tmp_path_factory):
  run_and_check(command, local_data, {}, shared_data_dir,
                str(tmp_path_factory.getbasetemp() / 'readme_runs'))
