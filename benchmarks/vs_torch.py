r"""sve_jax's SVE train step against a plain PyTorch SVE, side by side in one process.

  python -m benchmarks.vs_torch                      # 2-core CPU: about 6 minutes
  python -m benchmarks.vs_torch --preset=gpu         # one GPU (torch and jax on the same card)
  python -m benchmarks.vs_torch --decompose_only --repeats=7 \
      --out=benchmarks/results/decompose_cpu.json   # the one-off decomposition alone

The PyTorch reference is written from the paper's formula, the way the authors' release runs
it: every targeted ``nn.Linear`` holds frozen ``U``, ``Vᵀ`` and per-member ``s_m``, biases and
head; each forward rebuilds ``W_m = U diag(max(s_m, 0)) Vᵀ`` for every member, the batch is
repeated per member (one ``bmm`` per layer), attention is ``F.scaled_dot_product_attention``,
and the step is AdamW with gradient clipping at norm 1.0. It runs the same BERT (post-LN,
exact GELU, mean pooling) with the same weights, the same trainables and the same batch as
sve_jax; before anything is timed, the two forwards are checked to agree.

For each backbone (MiniLM-L6 with its real weights; a BERT-base-shaped random model) it
reports the median step time of torch and of sve_jax's ``compose``, ``factored`` and ``auto``
paths, and each sve_jax path ÷ torch. Timed runs alternate between the configurations, so
load on the machine hits them alike. It also times the one-off decomposition in both.
Results go to ``benchmarks/results/vs_torch_<preset>.json``.
"""
from __future__ import annotations

import json
import os
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import torch_sve
from sve_jax import methods
from sve_jax.train import steps
from sve_jax.train import state as train_state
from sve_jax.train import user_errors

_PRESET = flags.DEFINE_enum('preset', 'cpu', ['cpu', 'gpu'], 'Problem sizes.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per configuration (median).')
_STEPS = flags.DEFINE_integer('steps', 2, 'Steps per timed run.')
_BACKBONES = flags.DEFINE_list('backbones', None, 'Subset of backbones to run.')
_EXECUTIONS = flags.DEFINE_list('executions', ['compose', 'factored', 'auto'],
                                'sve_jax execution paths to time.')
_STEPS_PER_CALL = flags.DEFINE_integer(
    'steps_per_execution', 4, 'Also time auto with this many steps per call (1: not).')
_DECOMPOSE_ONLY = flags.DEFINE_bool('decompose_only', False,
                                    'Time only the one-off decomposition (torch vs sve_jax).')
_OUT = flags.DEFINE_string('out', None, 'Output JSON (default benchmarks/results/).')

#: backbone -> (batch, tokens, members)
PRESETS = {
    'cpu': {'minilm_l6': (16, 64, 4), 'bert_base': (8, 32, 4)},
    'gpu': {'minilm_l6': (32, 128, 4), 'bert_base': (32, 128, 4)},
}


# --------------------------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------------------------


def _jax_step(backbone, execution: str, members: int, data, steps_per_call: int = 1):
  """A jitted, compiled sve_jax train step on ``data``; returns ``(run, setup)``.

  ``steps_per_call > 1``: ``run`` makes one call of the multi-step (as the training loop
  does with ``config.steps_per_execution``), that many steps on copies of ``data``.
  """
  setup = methods.build('sve', backbone, common.method_config('sve', members, execution),
                        jax.random.key(0))
  optimizer = train_state.make_optimizer(torch_sve.LEARNING_RATE, total_steps=1000, warmup_steps=10,
                                         weight_decay=torch_sve.WEIGHT_DECAY, clip_norm=torch_sve.CLIP_NORM)
  # A copy: the step donates its state, and setup.trainables seed the torch reference.
  state = train_state.create_train_state(jax.tree.map(jnp.copy, setup.trainables), optimizer,
                                         jax.random.key(1))
  train_step = steps.make_train_step(setup.forward, optimizer)
  if steps_per_call > 1:
    train_step = steps.make_multi_step(train_step)
    data = common.repeat_steps(data, steps_per_call)
  step = jax.jit(train_step, donate_argnums=(0,))
  holder = {'state': step(state, setup.frozen, data)[0]}  # compile + warm-up

  def run():
    holder['state'], metrics = step(holder['state'], setup.frozen, data)
    return metrics['loss']

  jax.block_until_ready(run())
  return run, setup


def check_parity(torch_model, setup, data) -> float:
  """Max |torch logits − sve_jax logits| on ``data`` for the same trainables."""
  import torch  # pylint: disable=g-import-not-at-top
  inputs = data['inputs']
  with torch.no_grad():
    ref = torch_model.logits(*torch_sve.torch_inputs(inputs, torch_model)).cpu().numpy()
  ours = np.asarray(setup.forward(setup.frozen, setup.trainables, inputs,
                                  jax.random.key(0), False))
  return float(np.max(np.abs(ref - ours)))


def measure_backbone(name: str, batch: int, tokens: int, members: int, executions,
                     repeats: int, steps_per_run: int, steps_per_call: int = 1
                     ) -> dict[str, Any]:
  """Step times of torch SVE and each sve_jax path on one backbone, alternating runs.

  ``steps_per_call > 1`` adds ``auto`` run as the training loop runs it with
  ``config.steps_per_execution``: that many steps per call.
  """
  import torch  # pylint: disable=g-import-not-at-top
  device = _torch_device()
  backbone, weights = common.make_backbone(name, tokens)
  data = common.make_batch(backbone, batch, tokens, members, per_member=False)
  runs, setups = {}, {}
  for execution in executions:
    runs[execution], setups[execution] = _jax_step(backbone, execution, members, data)
  # (calls per timed run, steps they make)
  work = {key: (steps_per_run, steps_per_run) for key in ('torch', *executions)}
  if steps_per_call > 1:
    key = f'auto, {steps_per_call} steps per call'
    runs[key], _ = _jax_step(backbone, 'auto', members, data, steps_per_call)
    work[key] = (1, steps_per_call)
  reference = torch_sve.TorchSVE(backbone, device, setups[executions[0]].trainables, members)
  parity = check_parity(reference, setups[executions[0]], data)
  if not parity < 1e-3:
    raise AssertionError(f'{name}: torch and sve_jax logits differ by {parity}; the '
                         'comparison would not be of the same computation')
  torch_step = reference.make_step()
  ids, mask = torch_sve.torch_inputs(data['inputs'], reference)
  labels = torch.from_numpy(np.asarray(data['label'], np.int64)).to(device)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

  def run_torch():
    loss = torch_step(ids, mask, labels)
    sync()
    return loss

  run_torch()  # warm-up
  runs = {'torch': run_torch, **runs}
  times = {key: [] for key in runs}
  for _ in range(repeats):
    for key, fn in runs.items():  # seconds per step
      calls, steps_made = work[key]
      times[key].append(common.median_time(fn, 1, calls) * calls / steps_made)
  medians = {key: float(np.median(v)) for key, v in times.items()}
  return {
      'batch': batch, 'tokens': tokens, 'members': members, 'weights': weights,
      'device': device, 'parity_max_abs_logit_diff': parity,
      'step_s': medians, 'step_s_all': times,
      'vs_torch': {k: medians[k] / medians['torch'] for k in medians if k != 'torch'},
      'decompose_s': decomposition_times(backbone, device, members, repeats),
  }


def _torch_device() -> str:
  """torch's device: the GPU where jax has one too, else the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  return 'cuda' if jax.devices()[0].platform == 'gpu' and torch.cuda.is_available() else 'cpu'


def decomposition_times(backbone, device: str, members: int, repeats: int) -> dict[str, float]:
  """The one-off decomposition, medians of ``repeats`` alternating runs: torch's
  ``torch.linalg.svd`` per kernel against ``sve_jax.decompose`` (after one warm-up each)."""
  import sve_jax  # pylint: disable=g-import-not-at-top
  runs = {
      'torch': lambda: torch_sve.TorchSVE(backbone, device, None, members).decompose_s,
      'sve_jax': lambda: common.median_time(
          lambda: sve_jax.decompose(backbone.params, rules=backbone.rules)[1], 1, 1),
  }
  times = {key: [] for key in runs}
  for _ in range(repeats + 1):
    for key, run in runs.items():
      times[key].append(run())
  return {key: float(np.median(v[1:])) for key, v in times.items()}


def markdown_table(entry: dict[str, Any]) -> str:
  """One backbone's row set as BENCHMARKS.md shows it."""
  lines = ['| path | ms per step | ÷ torch SVE |', '|---|---|---|']
  for key, seconds in entry['step_s'].items():
    ratio = 1. if key == 'torch' else entry['vs_torch'][key]
    label = 'torch SVE (naive)' if key == 'torch' else f'sve_jax `{key}`'
    lines.append(f'| {label} | {seconds * 1e3:.0f} | {ratio:.2f} |')
  d = entry['decompose_s']
  lines.append(f'\nDecomposition: torch {d["torch"]:.2f} s, sve_jax {d["sve_jax"]:.2f} s.')
  return '\n'.join(lines)


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  preset = PRESETS[_PRESET.value]
  out = _OUT.value or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                   f'vs_torch_{_PRESET.value}.json')
  results = {'preset': _PRESET.value, 'device': jax.devices()[0].device_kind,
             'torch': torch.__version__, 'jax': jax.__version__,
             'torch_threads': torch.get_num_threads(), 'cpu_count': os.cpu_count(),
             'cpu': common.cpu_info(),
             'repeats': _REPEATS.value, 'steps_per_run': _STEPS.value, 'backbones': {}}
  for name in _BACKBONES.value or list(preset):
    batch, tokens, members = preset[name]
    if _DECOMPOSE_ONLY.value:
      backbone, weights = common.make_backbone(name, tokens)
      entry = {'weights': weights, 'decompose_s': decomposition_times(
          backbone, _torch_device(), members, _REPEATS.value)}
      print(f'{name} ({weights}): decomposition {entry["decompose_s"]}', flush=True)
    else:
      entry = measure_backbone(name, batch, tokens, members, _EXECUTIONS.value,
                               _REPEATS.value, _STEPS.value, _STEPS_PER_CALL.value)
      print(f'\n{name}, batch {batch} x {tokens} tokens, M = {members}\n'
            + markdown_table(entry), flush=True)
    results['backbones'][name] = entry
    with open(out, 'w') as f:
      json.dump(results, f, indent=2)
  print(f'wrote {out}')


if __name__ == '__main__':
  user_errors.run_cli(main)
