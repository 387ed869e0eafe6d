r"""Step-time cost of periodic checkpoints on the offline default, measured side by side.

  python -m benchmarks.checkpoint_cost                  # 4 passes of 40 steps, a save every 10
  python -m benchmarks.checkpoint_cost --steps=120 --every=20

About 160 train steps of the default in all: roughly 5 minutes on 2 idle CPU cores.

The offline default (``configs/default.py``: SVE, M = 4, MiniLM-L6 with its real weights,
batch 16 of real tweets, 40 tokens) trains the same fixed batch in four passes of
``--steps`` steps: without saves, with a synchronous save every ``--every`` steps, with an
asynchronous one (the default, ``checkpoint.asynchronous``), and without saves again (to see
drift on a shared machine). Every step waits for its loss, as ``train.py`` does. The saves
are periodic ones (``checkpoints/latest`` only); an end-of-epoch save that is also the best
waits for the latest's write before writing the best (see ``Checkpointer.save``). It reports:

* ``step_s``: the median step without a save;
* ``save_call_s``: median time the loop is blocked by ``Checkpointer.save`` (for an
  asynchronous save, the copy to host memory and the hand-off);
* ``step_after_save_s``: median time of the step that follows a save (an asynchronous write
  competes with it for the CPU);
* ``overhead_per_save_s``: (pass time - mean of the two no-save passes) / saves, the
  whole cost;
* ``checkpoint_bytes``: size of one checkpoint on disk.

Results go to ``benchmarks/results/checkpoint_cost.json`` and a Markdown table is printed.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

from absl import flags
import jax
import numpy as np

from configs import default
from sve_jax.train import checkpoint as ckpt
from sve_jax.data import transforms
from sve_jax import methods
from sve_jax import models
from sve_jax.train import sharding
from sve_jax.train import steps
from sve_jax.train import state as train_state
from sve_jax.data import builders
from sve_jax.data import tables
from sve_jax.train import user_errors

_STEPS = flags.DEFINE_integer('steps', 40, 'Steps per pass.')
_EVERY = flags.DEFINE_integer('every', 10, 'Save every this many steps.')
_OUT = flags.DEFINE_string('out', None, 'Output JSON (default benchmarks/results/).')

PASSES = (('no saves', None), ('synchronous saves', False), ('asynchronous saves', True),
          ('no saves again', None))


def tweet_batch(backbone: models.Backbone, size: int) -> dict[str, Any]:
  """The first ``size`` tweets of the default corpus, as the steps' batch."""
  table = tables.read_table(builders.tweet_corpus_path(), ('text', 'sentiment'),
                            encoding='latin-1')
  labels = [builders.TWEET_LABELS.index(s) for s in table['sentiment'][:size]]
  transform = transforms.make_transform(backbone, 'text', 'label')
  return transform({'text': table['text'][:size], 'label': np.asarray(labels, np.int64)})


def summarise(step_times: list[float], save_times: list[float],
              after_save_times: list[float], total_s: float) -> dict[str, float | None]:
  """One pass's figures (see the module docstring); medians of the lists given."""
  median = lambda xs: statistics.median(xs) if xs else None
  return {'step_s': median(step_times), 'save_call_s': median(save_times),
          'step_after_save_s': median(after_save_times), 'total_s': total_s,
          'saves': len(save_times)}


def add_overheads(passes: dict[str, dict[str, Any]]) -> None:
  """Sets each saving pass's ``overhead_per_save_s`` against the mean no-save pass."""
  baseline = statistics.mean(p['total_s'] for p in passes.values() if not p['saves'])
  for p in passes.values():
    p['overhead_per_save_s'] = (p['total_s'] - baseline) / p['saves'] if p['saves'] else None


def run_pass(train_step, state, frozen, batch, checkpointer, num_steps: int, every: int):
  """Trains ``num_steps`` steps, saving every ``every`` if ``checkpointer``; returns times."""
  step_times, save_times, after_save_times = [], [], []
  saved_last = False
  start = time.perf_counter()
  for step in range(1, num_steps + 1):
    t0 = time.perf_counter()
    state, metrics = train_step(state, frozen, batch)
    float(metrics['loss'])  # train.py reads the loss every step
    (after_save_times if saved_last else step_times).append(time.perf_counter() - t0)
    saved_last = False
    if checkpointer is not None and step % every == 0:
      t0 = time.perf_counter()
      checkpointer.save(state, {'step': step})
      save_times.append(time.perf_counter() - t0)
      saved_last = True
  if checkpointer is not None:
    checkpointer.wait()
  return state, step_times, save_times, after_save_times, time.perf_counter() - start


def main(argv):
  del argv
  config = default.get_config()
  backbone = models.load_backbone(config.model, num_classes=len(builders.TWEET_LABELS))
  setup = methods.build('sve', backbone, config, jax.random.key(0))
  optimizer = train_state.make_optimizer(config.optim.learning_rate, total_steps=10_000)
  mesh = sharding.make_mesh()
  state = train_state.create_train_state(setup.trainables, optimizer, jax.random.key(1))
  state = sharding.place(state, sharding.state_shardings(mesh, state))
  frozen = sharding.place(setup.frozen, sharding.replicated_shardings(mesh, setup.frozen))
  batch = sharding.shard_batch(tweet_batch(backbone, config.batch_size), mesh)
  train_step = sharding.jit_train_step(steps.make_train_step(setup.forward, optimizer), mesh,
                                       state, setup.frozen)
  for _ in range(2):  # compile and warm up
    state, metrics = train_step(state, frozen, batch)
    float(metrics['loss'])

  results: dict[str, Any] = {'config': 'configs/default.py', 'members': config.num_members,
                             'batch': config.batch_size, 'steps': _STEPS.value,
                             'every': _EVERY.value, 'devices': jax.device_count(),
                             'backend': jax.default_backend(), 'passes': {}}
  for name, asynchronous in PASSES:
    workdir = tempfile.mkdtemp(prefix='checkpoint_cost_')
    checkpointer = (None if asynchronous is None
                    else ckpt.Checkpointer(workdir, keep=2, asynchronous=asynchronous))
    state, step_times, save_times, after, total = run_pass(
        train_step, state, frozen, batch, checkpointer, _STEPS.value, _EVERY.value)
    results['passes'][name] = summarise(step_times, save_times, after, total)
    if checkpointer is not None:
      step_dir = os.path.join(workdir, 'checkpoints', 'latest',
                              str(max(checkpointer.latest.all_steps())))
      results['checkpoint_bytes'] = sum(os.path.getsize(os.path.join(root, f))
                                        for root, _, files in os.walk(step_dir)
                                        for f in files)
      checkpointer.close()
    shutil.rmtree(workdir)
  add_overheads(results['passes'])
  out = _OUT.value or os.path.join(os.path.dirname(__file__), 'results',
                                   'checkpoint_cost.json')
  with open(out, 'w') as f:
    json.dump(results, f, indent=2)
  print(markdown_table(results))


def markdown_table(results: dict[str, Any]) -> str:
  """The passes of ``results`` as a Markdown table, times in milliseconds."""
  ms = lambda x: '–' if x is None else f'{1000 * x:.1f}'
  lines = ['| pass | step (ms) | save call (ms) | step after a save (ms) | '
           'cost per save (ms) | pass (s) |', '|---|---|---|---|---|---|']
  for name, p in results['passes'].items():
    lines.append(f'| {name} | {ms(p["step_s"])} | {ms(p["save_call_s"])} | '
                 f'{ms(p["step_after_save_s"])} | {ms(p["overhead_per_save_s"])} | '
                 f'{p["total_s"]:.2f} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  user_errors.run_cli(main)
