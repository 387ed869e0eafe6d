"""benchmarks/memory.py on a tiny decoder shape: the figures a reader of its table relies on."""
import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import memory
from conftest import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def results(tmp_path_factory):
  out = tmp_path_factory.mktemp('memory') / 'memory.json'
  cmd = [sys.executable, '-m', 'benchmarks.memory', '--shapes=tiny', '--devices=1,8',
         '--remat=false', '--setups=single_ft,sve_factored', '--length=16', f'--out={out}']
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-5000:]
  with open(out) as f:
    return json.load(f)


def _kernels(c):
  """``(d_in, d_out)`` of every projection of one layer, from the config alone."""
  head_dim = c['hidden_size'] // c['num_attention_heads']
  d, q, kv = c['hidden_size'], c['num_attention_heads'] * head_dim, \
      c['num_key_value_heads'] * head_dim
  ffn = c['intermediate_size']
  return [(d, q), (d, kv), (d, kv), (q, d), (d, ffn), (d, ffn), (ffn, d)]


def test_sve_frozen_factor_bytes_are_u_and_vt_of_every_decomposed_kernel(results):
  c = memory.SHAPES['tiny']
  expected = c['num_hidden_layers'] * sum(
      (d_in * min(d_in, d_out) + min(d_in, d_out) * d_out) * 4 for d_in, d_out in _kernels(c))
  rows = [r for r in results['shapes']['tiny']['rows'] if r['setup'] == 'sve_factored']
  assert rows and all(r['factor_bytes'] == expected for r in rows)
  # Trainables: M copies of the singular values (r per kernel and layer); no biases, no head.
  members = results['problem']['members']
  singular = c['num_hidden_layers'] * sum(min(k) for k in _kernels(c))
  assert all(r['trainable_bytes'] == members * singular * 4 for r in rows)


def test_deep_ensemble_is_m_copies_of_params_and_two_adam_moments(results):
  c = memory.SHAPES['tiny']
  d = c['hidden_size']
  params = (c['vocab_size'] * d + d  # tied embedding, final norm
            + c['num_hidden_layers'] * (2 * d + sum(math.prod(k) for k in _kernels(c))))
  entry = results['shapes']['tiny']
  assert entry['params'] == params and entry['weight_bytes'] == params * 4
  assert entry['deep_ensemble']['parameter_bytes'] == 16 * (3 * params) * 4
  assert entry['deep_ensemble']['parameter_vs_weights'] == 48
  single = next(r for r in entry['rows'] if r['setup'] == 'single_ft')
  assert single['trainable_bytes'] == params * 4
  assert 0 <= single['optimizer_bytes'] - 2 * params * 4 < 64  # + AdamW's step counts


def test_fsdp_on_8_devices_lowers_the_per_device_arguments(results):
  rows = results['shapes']['tiny']['rows']
  by = {(r['setup'], r['devices']): r for r in rows}
  for setup in ('single_ft', 'sve_factored'):
    one, eight = by[setup, 1], by[setup, 8]
    assert eight['argument_bytes'] < one['argument_bytes'], setup
    assert one['total_bytes'] == (one['argument_bytes'] + one['output_bytes']
                                  + one['temp_bytes'] - one['alias_bytes'])
  # The single fine-tune's whole state is split: under 1/4 of it per device on 8.
  assert by['single_ft', 8]['argument_bytes'] < by['single_ft', 1]['argument_bytes'] / 4
  assert results['goals']['step_fits_where_single_ft_fits']
