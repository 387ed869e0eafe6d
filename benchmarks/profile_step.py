r"""The offline default's train step alone, for profilers: compile, then time ``--steps`` steps.

  python -m benchmarks.profile_step                       # MiniLM-L6, 16 x 40 tokens, M = 4
  perf record -F 499 -p <pid> -- sleep 20                 # while it runs, after "timing"
  python -m benchmarks.profile_step --trace=/tmp/trace    # jax.profiler trace (TensorBoard)
  python -m benchmarks.profile_step --tokens=64           # the vs_torch step (16 x 64)
  python -m benchmarks.profile_step --steps_per_execution=4   # 4 steps per call (lax.scan)

Same problem as ``configs/default.py``'s step (real weights, batch 16 of 40 tokens, M = 4,
``execution='auto'``); prints the median step time.
"""
from __future__ import annotations

import time

from absl import flags
import jax
import numpy as np

from benchmarks import common
from sve_jax import methods
from sve_jax.train import steps
from sve_jax.train import state as train_state
from sve_jax.train import user_errors

_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps.')
_EXECUTION = flags.DEFINE_enum('execution', 'auto', ['compose', 'factored', 'auto'], 'Path.')
_TRACE = flags.DEFINE_string('trace', None, 'Write a jax.profiler trace of the timed steps.')
_TOKENS = flags.DEFINE_integer('tokens', 40, 'Tokens per example (vs_torch times 64).')
_PER_CALL = flags.DEFINE_integer('steps_per_execution', 1,
                                 'Steps per call (a lax.scan, as config.steps_per_execution).')
BATCH, MEMBERS = 16, 4


def main(argv):
  del argv
  backbone, _ = common.make_backbone('minilm_l6', _TOKENS.value)
  setup = methods.build('sve', backbone,
                        common.method_config('sve', MEMBERS, _EXECUTION.value),
                        jax.random.key(0))
  optimizer = train_state.make_optimizer(1e-2, total_steps=1000, warmup_steps=10)
  state = train_state.create_train_state(setup.trainables, optimizer, jax.random.key(1))
  data = common.make_batch(backbone, BATCH, _TOKENS.value, MEMBERS, per_member=False)
  per_call = _PER_CALL.value
  data = common.repeat_steps(data, per_call)
  step = jax.jit(steps.make_multi_step(steps.make_train_step(setup.forward, optimizer)),
                 donate_argnums=(0,))
  state, metrics = step(state, setup.frozen, data)
  jax.block_until_ready(metrics)
  print('timing', flush=True)
  if _TRACE.value:
    jax.profiler.start_trace(_TRACE.value)
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = step(state, setup.frozen, data)
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - t0) / per_call)
  if _TRACE.value:
    jax.profiler.stop_trace()
  print(f'median step {np.median(times) * 1e3:.0f} ms over {len(times)} calls of '
        f'{per_call} steps')


if __name__ == '__main__':
  user_errors.run_cli(main)
