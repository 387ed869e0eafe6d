r"""What adapting only the top K of L blocks saves (``config.model.adapted_blocks``).

  python -m benchmarks.top_blocks                                  # MiniLM-L6, M = 4 and 8
  python -m benchmarks.top_blocks --backbone=smollm2 --members=4,16 --batch=4 --tokens=32

For each M and each K in {L, L/2, L/4} (rounded up) it builds SVE with
``models.adapt_top_blocks`` and times, side by side in one process:

* ``train step``: one jitted train step (forward, backward, AdamW) on a batch that every member
  shares, as ratios to one model's step (``single_svf``: M = 1, every block) and to full SVE
  (K = L, same M);
* ``batch-1 latency``: the ensemble's forward on one input, as ratios to the plain backbone
  (``backbone.apply``) and to full SVE.

The trunk, blocks [0, L − K), runs once per batch under the member ``jax.vmap``; blocks
[L − K, L) run per member. So a forward costs about ``(L − K) + M·K`` blocks instead of
``M·L``; this measures how much of that reaches the wall clock. Times are medians over
``--repeats`` rounds; every round times each configuration once, in turn, so that load on a
shared machine hits them alike. Results go to ``benchmarks/results/top_blocks_<backbone>.json``.
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, Callable

from absl import flags
import jax
import numpy as np

from benchmarks import common
from sve_jax import methods
from sve_jax import models
from sve_jax.train import state as train_state
from sve_jax.train import steps
from sve_jax.train import user_errors

def define_flags() -> None:
  """The command line; defined when run as a script, so tests can import the module beside
  other benchmarks (absl flags are global: several define --repeats)."""
  flags.DEFINE_enum('backbone', 'minilm_l6', ['minilm_l6', 'smollm2'],
                    'MiniLM-L6 (real weights) or SmolLM2-135M (real weights).')
  flags.DEFINE_list('members', ['4', '8'], 'Ensemble sizes M.')
  flags.DEFINE_integer('batch', 16, 'Training batch (every member sees it).')
  flags.DEFINE_integer('tokens', 40, 'Tokens per example.')
  flags.DEFINE_integer('repeats', 7, 'Timed rounds (median).')
  flags.DEFINE_bool('train', True, 'Time the train step.')
  flags.DEFINE_string('out', None, 'Output JSON (default benchmarks/results/).')


def load(name: str, tokens: int) -> models.Backbone:
  """The backbone with its real offline weights."""
  if name == 'minilm_l6':
    return common.make_backbone('minilm_l6', tokens)[0]
  return models.load_backbone({'name': 'llama', 'path': '', 'prompt': '{text}',
                               'verbalizer': (' negative', ' neutral', ' positive'),
                               'max_length': tokens, 'dtype': 'float32'}, num_classes=3)


def depths(num_blocks: int) -> tuple[int, ...]:
  """K in {L, L/2, L/4}, rounded up."""
  return tuple(sorted({num_blocks, math.ceil(num_blocks / 2), math.ceil(num_blocks / 4)},
                      reverse=True))


def _batch(backbone: models.Backbone, batch: int, tokens: int) -> dict[str, Any]:
  data = common.make_batch(backbone, batch, tokens, 1, per_member=False)
  if backbone.name == 'llama':  # no token types; labels over the verbaliser's 3 classes
    data['inputs'].pop('token_type_ids')
  return data


def train_call(backbone: models.Backbone, method: str, members: int, data) -> Callable:
  """A zero-argument call running one compiled train step (state carried between calls)."""
  setup = methods.build(method, backbone, common.method_config(method, members, 'auto'),
                        jax.random.key(0))
  optimizer = train_state.make_optimizer(1e-3, total_steps=1000, warmup_steps=10)
  state = train_state.create_train_state(setup.trainables, optimizer, jax.random.key(1))
  step = jax.jit(steps.make_train_step(setup.forward, optimizer), donate_argnums=(0,))
  holder = {'state': state}

  def call():
    holder['state'], metrics = step(holder['state'], setup.frozen, data)
    return metrics['loss']

  jax.block_until_ready(call())
  return call


def latency_call(backbone: models.Backbone, members: int | None, inputs) -> Callable:
  """One input through the ensemble's forward (``members=None``: the plain backbone)."""
  if members is None:
    fn = jax.jit(backbone.apply)
    call = functools.partial(fn, backbone.params, inputs)
  else:
    setup = methods.build('sve', backbone, common.method_config('sve', members, 'auto'),
                          jax.random.key(0))
    fn = jax.jit(steps.make_eval_step(setup.forward))
    call = functools.partial(fn, setup.trainables, setup.frozen, inputs, jax.random.key(2))
  jax.block_until_ready(call())
  return call


def ratios(medians: dict[str, float], one: str, full: Callable[[str], str]) -> dict:
  """``{name: {'s', 'vs_one_model', 'vs_full_sve'}}``."""
  return {name: {'s': t, 'vs_one_model': t / medians[one],
                 'vs_full_sve': t / medians[full(name)] if full(name) else None}
          for name, t in medians.items()}


def measure(backbone: models.Backbone, members: list[int], batch: int, tokens: int,
            repeats: int, train: bool) -> dict[str, Any]:
  """Latency (and train-step) ratios for every M and K (see the module docstring)."""
  num_blocks = backbone.num_blocks
  data = _batch(backbone, batch, tokens)
  one_input = jax.tree_util.tree_map(lambda x: x[:1], data['inputs'])
  name = lambda m, k: f'M={m} K={k}'
  full = lambda n: None if n == 'one model' else n.split(' K=')[0] + f' K={num_blocks}'
  results = {}
  latency = {'one model': latency_call(backbone, None, one_input)}
  for m in members:
    for k in depths(num_blocks):
      latency[name(m, k)] = latency_call(models.adapt_top_blocks(backbone, k), m, one_input)
  results['batch1_latency'] = ratios(common.interleaved_medians(latency, repeats), 'one model',
                                     full)
  if train:
    steps_ = {'one model': train_call(backbone, 'single_svf', 1, data)}
    for m in members:
      for k in depths(num_blocks):
        steps_[name(m, k)] = train_call(models.adapt_top_blocks(backbone, k), 'sve', m, data)
    results['train_step'] = ratios(common.interleaved_medians(steps_, repeats), 'one model',
                                   full)
  return results


def markdown(results: dict[str, Any]) -> str:
  lines = []
  for section in ('train_step', 'batch1_latency'):
    if section not in results:
      continue
    lines += [f'{section}', '| config | ms | ÷ one model | ÷ full SVE |', '|---|---|---|---|']
    for name, row in results[section].items():
      full = '–' if row['vs_full_sve'] is None else f"{row['vs_full_sve']:.2f}"
      lines.append(f"| {name} | {row['s'] * 1e3:.1f} | {row['vs_one_model']:.2f} | {full} |")
  return '\n'.join(lines)


def main(argv):
  del argv
  args = flags.FLAGS
  backbone = load(args.backbone, args.tokens)
  members = [int(m) for m in args.members]
  results = measure(backbone, members, args.batch, args.tokens, args.repeats, args.train)
  results.update(backbone=args.backbone, num_blocks=backbone.num_blocks, members=members,
                 batch=args.batch, tokens=args.tokens, repeats=args.repeats,
                 device=jax.devices()[0].device_kind, cpu=common.cpu_info())
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                 f'top_blocks_{args.backbone}.json')
  with open(out, 'w') as f:
    json.dump(results, f, indent=2)
  print(markdown(results))
  print(f'wrote {out}')


if __name__ == '__main__':
  define_flags()
  user_errors.run_cli(main)
