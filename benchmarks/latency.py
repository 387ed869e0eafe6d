r"""Serving latency at batch 1: SVE (M members) against one model and a deep ensemble.

  python -m benchmarks.latency                   # MiniLM-L6, M = 8, 1 x 32 tokens (~2 min)
  python -m benchmarks.latency --members=4 --tokens=64

All jitted, in one process, one input of ``--tokens`` tokens; times are medians of
``--calls`` calls after warm-up, the configurations alternating so load hits them alike:

* ``one model``: the plain backbone (``backbone.apply``), the reference of every ratio;
* ``deep ensemble``: M full copies of the backbone under one ``jax.vmap``
  (``sve_jax.materialize_members``), what an explicit ensemble of M models runs;
* ``sve_apply (auto)``: ``sve_jax.make_sve_apply(..., 'auto')``; at batch 1 the cost model
  runs every kernel factored, ``((x·U) ⊙ s_m)·Vᵀ``: U and V are shared, so all members'
  tokens meet each factor in one matrix product and the weights are read once;
* ``sve_apply (compose)``: the authors' way, rebuilding every ``W_m`` per call;
* ``materialised kernels``: ``sve_jax.materialize_kernels`` once, then M plain forwards that
  share the frozen embeddings;
* ``torch SVE``: the naive PyTorch reference (``benchmarks/torch_sve.py``), no grad.

Writes ``benchmarks/results/latency_<platform>.json`` and prints the Markdown table.
"""
from __future__ import annotations

import functools
import json
import os

from absl import flags
import jax
import numpy as np

import sve_jax
from benchmarks import common
from benchmarks import torch_sve
from sve_jax.train import user_errors

_MEMBERS = flags.DEFINE_integer('members', 8, 'Ensemble size M.')
_TOKENS = flags.DEFINE_integer('tokens', 32, 'Tokens of the one input.')
_CALLS = flags.DEFINE_integer('calls', 30, 'Timed calls per configuration (median).')
_BACKBONE = flags.DEFINE_string('backbone', 'minilm_l6', 'minilm_l6 | bert_base.')
_OUT = flags.DEFINE_string('out', None, 'Output JSON (default benchmarks/results/).')


def configurations(backbone, members: int, inputs) -> tuple[dict[str, callable], dict[str, float]]:
  """``({name: zero-argument call returning logits}, {name: XLA flops})``, each compiled and
  warmed up (flops for the jax configurations only)."""
  frozen, s = sve_jax.decompose(backbone.params, rules=backbone.rules)
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, members, noise_std=0.01)
  sve_params = {'frozen': frozen, 'trainables': trainables}
  stacked = sve_jax.materialize_members(frozen, trainables)
  frozen_m, trainables_m = sve_jax.materialize_kernels(frozen, trainables)
  compose = jax.jit(sve_jax.make_sve_apply(backbone.apply, 'compose'))
  programs = {  # name -> (jitted function, its arguments)
      'one model': (jax.jit(backbone.apply), (backbone.params, inputs)),
      'deep ensemble': (jax.jit(jax.vmap(backbone.apply, in_axes=(0, None))), (stacked, inputs)),
      'sve_apply (auto)': (jax.jit(sve_jax.make_sve_apply(backbone.apply, 'auto')),
                           (sve_params, inputs)),
      'sve_apply (compose)': (compose, (sve_params, inputs)),
      'materialised kernels': (compose, ({'frozen': frozen_m, 'trainables': trainables_m},
                                         inputs)),
  }
  calls = {name: functools.partial(fn, *args) for name, (fn, args) in programs.items()}
  flops = {name: common.xla_flops(fn, *args) for name, (fn, args) in programs.items()}
  reference = torch_sve.TorchSVE(backbone, 'cpu', trainables, members)
  ids, mask = torch_sve.torch_inputs(inputs, reference)

  def run_torch():
    import torch  # pylint: disable=g-import-not-at-top
    with torch.no_grad():
      return reference.logits(ids, mask)

  calls['torch SVE (naive)'] = run_torch
  expected = np.asarray(calls['sve_apply (compose)']())
  for name, call in calls.items():
    out = np.asarray(call())
    if name != 'one model' and not np.allclose(out, expected, atol=1e-3):
      raise AssertionError(f'{name}: logits differ from sve_apply by '
                           f'{np.max(np.abs(out - expected))}')
  return calls, flops


def main(argv):
  del argv
  backbone, weights = common.make_backbone(_BACKBONE.value, _TOKENS.value)
  inputs = {k: v[:1] for k, v in common.make_batch(backbone, 1, _TOKENS.value, 1,
                                                    per_member=False)['inputs'].items()}
  calls, flops = configurations(backbone, _MEMBERS.value, inputs)
  medians = common.interleaved_medians(calls, _CALLS.value)
  one = medians['one model']
  results = {'backbone': _BACKBONE.value, 'weights': weights, 'members': _MEMBERS.value,
             'tokens': _TOKENS.value, 'calls': _CALLS.value,
             'device': jax.devices()[0].device_kind, 'latency_s': medians,
             'vs_one_model': {k: v / one for k, v in medians.items()},
             'xla_flops': flops,
             'gflop_per_s': {k: flops[k] / medians[k] / 1e9 for k in flops}}
  out = _OUT.value or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                   f'latency_{jax.devices()[0].platform}.json')
  with open(out, 'w') as f:
    json.dump(results, f, indent=2)
  lines = [f'{_BACKBONE.value}, batch 1 x {_TOKENS.value} tokens, M = {_MEMBERS.value}',
           '| configuration | ms | ÷ one model | XLA GFLOP | GFLOP/s |', '|---|---|---|---|---|']
  for k, v in medians.items():
    rate = (f'{flops[k] / 1e9:.2f} | {flops[k] / v / 1e9:.0f}' if k in flops else '– | –')
    lines.append(f'| {k} | {v * 1e3:.1f} | {v / one:.2f} | {rate} |')
  print('\n'.join(lines))
  print(f'wrote {out}')


if __name__ == '__main__':
  user_errors.run_cli(main)
