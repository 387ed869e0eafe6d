r"""Cost of SVE against its baselines, measured side by side in one process.

  python -m benchmarks.cost                      # CPU sizes (2 cores: MiniLM-L6 5 min,
                                                 # ViT-S/16 7 min, BERT-base over 20 min)
  python -m benchmarks.cost --preset=gpu         # one accelerator; sized for ~5 min on an H100

For each backbone (MiniLM-L6 with its real weights, a BERT-base-shaped and a ViT-S/16-shaped
random model) and one fixed batch it measures:

* train-step time of SVE (M = 1, 4, 8; compose and factored), deep ensemble (M = 4, 8) and
  single fine-tuning, and the ratios SVE(M) / (M x single) and SVE(M) / deep ensemble(M);
* memory: XLA's own account of each compiled train step (arguments + outputs + temporaries
  - aliased; on an accelerator, the device memory the step needs), and with ``--memory``
  (the cpu preset's default) the peak RSS and device ``peak_bytes_in_use`` of a fresh
  subprocess per configuration;
* trainable parameters and optimiser-state bytes per method;
* the one-off decomposition time;
* inference time of ``sve_apply`` against the deep ensemble and M x single-model inference,
  and of the plain backbone on ``sve_jax.materialize_members``' stacked params (composed
  once, as for serving).

Times are medians over ``--repeats`` timed runs of ``--steps`` steps each, after compilation
and a warm-up step. Results go to ``benchmarks/results/cost_<preset>.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from absl import flags
import jax

from benchmarks import common
from sve_jax import methods
from sve_jax import models
from sve_jax.train import steps
from sve_jax.train import state as train_state
from sve_jax.train import user_errors

_PRESET = flags.DEFINE_enum('preset', 'cpu', ['cpu', 'gpu'], 'Problem sizes.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per configuration (median).')
_STEPS = flags.DEFINE_integer('steps', 3, 'Steps per timed run.')
_BACKBONES = flags.DEFINE_list('backbones', None, 'Subset of backbones to run.')
_MEMORY = flags.DEFINE_bool('memory', None, 'Also measure peak host RSS and device bytes '
                              'of each configuration in a fresh subprocess (default: on for '
                              'the cpu preset, off for gpu, where it would double the run).')
_ONE = flags.DEFINE_string('one', None, 'Internal: run one configuration, print its peak.')
_ONLY = flags.DEFINE_list('only', None, 'Subset of configurations, as method:M:execution.')
_OUT = flags.DEFINE_string('out', None, 'Output JSON (default benchmarks/results/).')
_TABLES = flags.DEFINE_string('tables', None, 'Print the Markdown tables of an earlier '
                              'results JSON and exit.')

PRESETS = {
    # backbone -> (batch, sequence length or image size)
    'cpu': {'minilm_l6': (8, 32), 'bert_base': (4, 32), 'vit_s16': (4, 64)},
    'gpu': {'minilm_l6': (32, 128), 'bert_base': (32, 128), 'vit_s16': (32, 224)},
}
# (method, M, execution); 'auto' shows which path the cost model picks at this size.
CONFIGS = [
    ('single_ft', 1, 'compose'),
    ('sve', 1, 'compose'), ('sve', 1, 'factored'),
    ('sve', 4, 'compose'), ('sve', 4, 'factored'), ('sve', 4, 'auto'),
    ('sve', 8, 'compose'), ('sve', 8, 'factored'),
    ('deep_ensemble', 4, 'compose'), ('deep_ensemble', 8, 'compose'),
]


def measure(backbone: models.Backbone, method: str, members: int, execution: str, batch: int,
            size: int, repeats: int, steps_per_run: int) -> dict[str, Any]:
  """Times one train step and one inference pass of one configuration."""
  t0 = time.perf_counter()
  setup = methods.build(method, backbone, common.method_config(method, members, execution),
                        jax.random.key(0))
  jax.block_until_ready(setup.trainables)
  build_s = time.perf_counter() - t0
  optimizer = train_state.make_optimizer(1e-3, total_steps=1000, warmup_steps=10)
  state = train_state.create_train_state(setup.trainables, optimizer, jax.random.key(1))
  data = common.make_batch(backbone, batch, size, members,
                    getattr(setup, 'per_member_data', False))
  # Compiled once: the same executable gives XLA's memory account and runs the timed steps.
  step = jax.jit(steps.make_train_step(setup.forward, optimizer), donate_argnums=(0,)).lower(
      state, setup.frozen, data).compile()
  compiled_bytes = _compiled_bytes(step)
  holder = {'state': state}

  def one_step():
    holder['state'], metrics = step(holder['state'], setup.frozen, data)
    return metrics['loss']

  jax.block_until_ready(one_step())  # compile + warm-up
  train_s = common.median_time(one_step, repeats, steps_per_run)
  eval_inputs = common.make_batch(backbone, batch, size, members, False)['inputs']
  eval_args = (holder['state'].trainables, setup.frozen, eval_inputs, jax.random.key(2))
  infer = jax.jit(steps.make_eval_step(setup.forward)).lower(*eval_args).compile()
  run_infer = lambda: infer(*eval_args)
  jax.block_until_ready(run_infer())
  infer_s = common.median_time(run_infer, repeats, steps_per_run)
  opt_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(holder['state'].opt_state))
  row = {'method': method, 'members': members, 'execution': execution,
         'build_s': build_s, 'train_step_s': train_s, 'inference_s': infer_s,
         'trainable_per_member': setup.trainable_per_member,
         'trainable_total': setup.trainable_per_member * members,
         'backbone_params': setup.backbone_params, 'optimizer_state_bytes': int(opt_bytes),
         'compiled_step_bytes': compiled_bytes}
  if method == 'sve' and execution == 'compose':  # the path does not matter once composed
    row.update(materialized_inference(backbone, setup.frozen, holder['state'].trainables,
                                      eval_inputs, repeats, steps_per_run))
  return row


def materialized_inference(backbone: models.Backbone, frozen, trainables, inputs,
                           repeats: int, steps_per_run: int) -> dict[str, float]:
  """Inference after composing every member once (``sve_jax.materialize_members``).

  Returns the one-off composition time and the time per call of the plain vmapped backbone
  on the stacked params, which is what serving a trained SVE model costs.
  """
  import sve_jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(sve_jax.materialize_members(frozen, trainables))  # compile
  holder = {}

  def materialize():
    holder['stacked'] = sve_jax.materialize_members(frozen, trainables)
    return holder['stacked']

  materialize_s = common.median_time(materialize, repeats, 1)
  infer = jax.jit(jax.vmap(backbone.apply, in_axes=(0, None)))
  run = lambda: infer(holder['stacked'], inputs)
  jax.block_until_ready(run())
  return {'materialize_s': materialize_s,
          'inference_materialized_s': common.median_time(run, repeats, steps_per_run)}


def _compiled_bytes(compiled) -> int | None:
  """XLA's own account of a compiled step: arguments + outputs + temporaries - aliased."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def _peak_rss_bytes() -> int:
  """This process's peak RSS (VmHWM).

  Not ``getrusage``'s ``ru_maxrss``: Linux carries it across ``exec``, so a subprocess
  reports at least the parent's RSS at the fork.
  """
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) * 1024
  raise RuntimeError('no VmHWM in /proc/self/status')


def _subprocess_peak(backbone_name: str, method: str, members: int,
                     execution: str) -> dict[str, int]:
  """Peak host RSS and device bytes of a fresh process that builds and steps one config."""
  spec = f'{backbone_name},{method},{members},{execution}'
  cmd = [sys.executable, '-m', 'benchmarks.cost', f'--preset={_PRESET.value}', f'--one={spec}',
         '--repeats=1', '--steps=1']
  proc = subprocess.run(cmd, capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if proc.returncode:  # e.g. killed for memory: record it, keep measuring the rest
    return {'memory_error': f'subprocess exited with {proc.returncode}'}
  found = {}
  for line in proc.stdout.splitlines():
    if line.startswith(('PEAK_RSS ', 'PEAK_DEVICE ')):
      key, value = line.split()
      found['peak_rss_bytes' if key == 'PEAK_RSS' else 'device_peak_bytes'] = int(value)
  return found


def add_ratios(rows: list[dict[str, Any]]) -> None:
  """SVE(M) / (M x single fine-tune) and SVE(M) / deep ensemble(M), for time and memory."""
  single = next((r for r in rows if r['method'] == 'single_ft'), None)
  deep = {r['members']: r for r in rows if r['method'] == 'deep_ensemble'}
  for r in rows:
    if r['method'] != 'sve':
      continue
    m = r['members']
    if single is not None:
      r['train_vs_m_single'] = r['train_step_s'] / (m * single['train_step_s'])
      r['inference_vs_m_single'] = r['inference_s'] / (m * single['inference_s'])
    if m in deep:
      r['train_vs_deep_ensemble'] = r['train_step_s'] / deep[m]['train_step_s']
      r['inference_vs_deep_ensemble'] = r['inference_s'] / deep[m]['inference_s']
      if 'inference_materialized_s' in r:
        r['inference_materialized_vs_deep_ensemble'] = (r['inference_materialized_s']
                                                        / deep[m]['inference_s'])
      for key in ('compiled_step_bytes', 'device_peak_bytes', 'peak_rss_bytes'):
        if r.get(key) and deep[m].get(key):
          r[key.replace('_bytes', '_vs_deep_ensemble')] = r[key] / deep[m][key]


_NAMES = {'single_ft': 'single fine-tune', 'sve': 'SVE', 'deep_ensemble': 'deep ensemble'}
_GIB, _MIB = 2.**30, 2.**20


def markdown_table(rows: list[dict[str, Any]]) -> str:
  """The rows of one backbone (after :func:`add_ratios`) as the table BENCHMARKS.md shows.

  Times in ms; memory in GiB (XLA's compiled step, and peak RSS where measured); optimiser
  state in MiB; empty cells where a figure or its reference row is missing.
  """
  def cell(row, key, scale, fmt):
    value = row.get(key)
    return fmt.format(value * scale) if isinstance(value, (int, float)) else ''

  columns = [  # header, key, scale, format
      ('step ms', 'train_step_s', 1e3, '{:.1f}'), ('÷ M·single', 'train_vs_m_single', 1, '{:.2f}'),
      ('÷ deep', 'train_vs_deep_ensemble', 1, '{:.2f}'),
      ('compiled GiB', 'compiled_step_bytes', 1 / _GIB, '{:.2f}'),
      ('÷ deep', 'compiled_step_vs_deep_ensemble', 1, '{:.2f}'),
      ('peak RSS GiB', 'peak_rss_bytes', 1 / _GIB, '{:.2f}'),
      ('÷ deep', 'peak_rss_vs_deep_ensemble', 1, '{:.2f}'),
      ('opt state MiB', 'optimizer_state_bytes', 1 / _MIB, '{:.1f}'),
      ('inference ms', 'inference_s', 1e3, '{:.1f}'),
      ('÷ deep', 'inference_vs_deep_ensemble', 1, '{:.2f}'),
      ('materialised inference ms', 'inference_materialized_s', 1e3, '{:.1f}'),
      ('÷ deep', 'inference_materialized_vs_deep_ensemble', 1, '{:.2f}'),
  ]
  header = ['method', 'M', 'path'] + [c[0] for c in columns]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in rows:
    path = row['execution'] if row['method'] == 'sve' else ''
    cells = [_NAMES.get(row['method'], row['method']), str(row['members']), path]
    cells += [cell(row, key, scale, fmt) for _, key, scale, fmt in columns]
    if row.get('memory_error'):
      cells[header.index('peak RSS GiB')] = row['memory_error']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  if _TABLES.value:
    with open(_TABLES.value) as f:
      for name, entry in json.load(f)['backbones'].items():
        print(f'\n{name}, batch {entry["batch"]} x {entry["size"]}\n'
              + markdown_table(entry['rows']))
    return
  preset = PRESETS[_PRESET.value]
  if _ONE.value:
    name, method, members, execution = _ONE.value.split(',')
    batch, size = preset[name]
    measure(common.make_backbone(name, size)[0], method, int(members), execution, batch,
            size, 1, 1)
    stats = jax.devices()[0].memory_stats() or {}
    print('PEAK_RSS', _peak_rss_bytes())
    print('PEAK_DEVICE', stats.get('peak_bytes_in_use', 0))
    return
  names = _BACKBONES.value or list(preset)
  out = _OUT.value or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                   f'cost_{_PRESET.value}.json')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  results = {'preset': _PRESET.value, 'device': jax.devices()[0].device_kind,
             'platform': jax.devices()[0].platform, 'repeats': _REPEATS.value,
             'steps_per_run': _STEPS.value, 'backbones': {}}
  for name in names:
    batch, size = preset[name]
    backbone, weights = common.make_backbone(name, size)
    rows = []
    entry = results['backbones'][name] = {'batch': batch, 'size': size, 'weights': weights,
                                          'rows': rows}
    for method, members, execution in CONFIGS:
      if _ONLY.value and f'{method}:{members}:{execution}' not in _ONLY.value:
        continue
      row = measure(backbone, method, members, execution, batch, size, _REPEATS.value,
                    _STEPS.value)
      if _MEMORY.value or (_MEMORY.value is None and _PRESET.value == 'cpu'):
        row.update(_subprocess_peak(name, method, members, execution))
      rows.append(row)
      print(json.dumps(row), flush=True)
      _write(out, results)  # partial results survive a time limit
    add_ratios(rows)
    entry['decompose_s'] = common.decomposition_time(backbone, _REPEATS.value)
    _write(out, results)
    print(f'\n{name}, batch {batch} x {size}, decomposition {entry["decompose_s"]:.2f} s\n'
          + markdown_table(rows), flush=True)
  print(f'wrote {out}')


def _write(path: str, results: dict[str, Any]) -> None:
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)


if __name__ == '__main__':
  user_errors.run_cli(main)
