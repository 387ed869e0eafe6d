"""The project installs as a package: `import sve_jax` anywhere, dependencies from one list."""
import importlib.metadata
import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from conftest import ROOT

pytestmark = pytest.mark.e2e


def _requirement_lines(file_name):
  with open(os.path.join(ROOT, file_name)) as f:
    lines = (line.split('#', 1)[0].strip() for line in f)
    return {str(Requirement(line)) for line in lines if line}


def test_import_sve_jax_works_from_outside_the_checkout():
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  out = subprocess.run(
      [sys.executable, '-c', 'import sve_jax; print(sve_jax.__file__); sve_jax.decompose'],
      cwd='/', env=env, capture_output=True, text=True, check=True)
  # scripts/setup.sh installs the checkout editable: the import resolves to this tree.
  assert os.path.realpath(out.stdout.strip()) == os.path.realpath(
      os.path.join(ROOT, 'sve_jax', '__init__.py'))


def test_installed_metadata_lists_the_requirements_files():
  requires = [Requirement(r) for r in importlib.metadata.requires('sve_jax')]
  runtime = {str(r) for r in requires if r.marker is None}
  extra = lambda name: {str(Requirement(f'{r.name}{r.specifier}')) for r in requires
                        if r.marker is not None and r.marker.evaluate({'extra': name})}
  stale = 'the installed metadata is stale: rerun scripts/setup.sh'
  assert runtime == _requirement_lines('requirements.txt'), stale
  for name in ('test', 'tf', 'tunix'):
    assert extra(name) == _requirement_lines(f'requirements-{name}.txt'), stale
  assert {'test', 'tf', 'tunix'} <= set(
      importlib.metadata.metadata('sve_jax').get_all('Provides-Extra'))
