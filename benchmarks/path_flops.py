r"""Which program ``auto`` compiles to at each benchmarked size, by XLA's own flop count.

  python -m benchmarks.path_flops          # ~5 min on 2 CPU cores (compiles only)

For every size the cost and vs_torch benchmarks time (and the default's 16 x 40), it
compiles the SVE (M = 4) train step on the compose, factored and auto paths and records
XLA's ``cost_analysis()`` flops. Where ``auto`` equals one single path's flops, it is that
path's program, and any timing gap between the two is noise. Writes
``benchmarks/results/path_flops_cpu.json``.
"""
from __future__ import annotations

import json
import os

import jax

from benchmarks import common
from sve_jax import methods
from sve_jax.train import steps
from sve_jax.train import state as train_state
from sve_jax.train import user_errors

#: (backbone, batch, tokens or image size)
SIZES = (('minilm_l6', 8, 32), ('minilm_l6', 16, 64), ('minilm_l6', 16, 40),
         ('bert_base', 4, 32), ('bert_base', 8, 32), ('vit_s16', 4, 64))
PATHS = ('compose', 'factored', 'auto')


def step_flops(backbone, execution: str, batch: int, size: int, members: int = 4) -> float:
  """XLA's flop count of one compiled SVE train step."""
  setup = methods.build('sve', backbone, common.method_config('sve', members, execution),
                        jax.random.key(0))
  optimizer = train_state.make_optimizer(1e-3, total_steps=10, warmup_steps=1)
  state = train_state.create_train_state(setup.trainables, optimizer, jax.random.key(1))
  data = common.make_batch(backbone, batch, size, members, per_member=False)
  return common.xla_flops(jax.jit(steps.make_train_step(setup.forward, optimizer)),
                          state, setup.frozen, data)


def main(argv):
  del argv
  out = {}
  for name, batch, size in SIZES:
    backbone, _ = common.make_backbone(name, size)
    row = {path: step_flops(backbone, path, batch, size) for path in PATHS}
    same = [p for p in ('factored', 'compose') if row[p] == row['auto']]
    row['auto_is'] = same[0] if same else 'mixed'
    out[f'{name} {batch}x{size}'] = row
    print(f'{name} {batch} x {size}: ' + ', '.join(f'{p} {row[p] / 1e9:.1f} GFLOP'
                                                    for p in PATHS) + f'; auto is {row["auto_is"]}',
          flush=True)
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                      'path_flops_cpu.json')
  with open(path, 'w') as f:
    json.dump(out, f, indent=2)
  print(f'wrote {path}')


if __name__ == '__main__':
  user_errors.run_cli(main)
