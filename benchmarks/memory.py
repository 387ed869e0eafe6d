r"""Memory at scale: one training step of SVE and its baselines on Llama-family decoders.

  python -m benchmarks.memory                       # all shapes, 1 and 8 devices, remat off/on
  python -m benchmarks.memory --shapes=smollm2_135m --devices=1

No weights are loaded or allocated. Every array is an abstract shape: the decoder's params come
from ``jax.eval_shape`` of its ``init``, SVE's frozen factors and singular values from
``jax.eval_shape`` of :func:`sve_jax.decompose` (the same code that factorises real weights,
traced), and each train step is ``jax.jit(step, in_shardings=..., out_shardings=...)``
lowered on those shapes and compiled. XLA's ``memory_analysis()`` of the compiled step is then
its account, per device, of

* **arguments**: the train state (trainables and optimiser moments), the frozen tree and the
  batch that device holds;
* **outputs**: the new state and the metrics;
* **temporaries**: everything else the step allocates (activations kept for the backward pass,
  gradients, composed kernels, all-gathered weights);
* **aliased**: outputs written into donated arguments (the state is donated, as in training);

and ``total = arguments + outputs + temporaries - aliased`` is the memory one device needs for
the step. These are deterministic: the same command gives the same bytes on any machine.

The step is one training step (AdamW: params + 2 moments, as
:func:`sve_jax.train.state.make_optimizer`) on a batch of ``--batch`` × ``--length`` tokens;
the decoder classifies by prompt, class logits at each row's last token from the LM head's
rows of ``--label_tokens`` verbaliser tokens (``label_token_ids``). The set-ups:

* ``inference``: one model's forward pass, no gradient (remat does not apply; measured once).
* ``single_ft``: one full fine-tune, every weight trained with AdamW: the decoder's params are
  the trainables, with no member axis (what a single-model user runs; the reference of the
  ratios and of goal 2).
* ``single_ft_method``: the same through the package's ``single_ft`` method, whose trainables
  carry a member axis of size 1 under ``jax.vmap`` (XLA then keeps more temporaries).
* ``lora_ensemble``: LoRA-Ensemble, M members, rank ``--lora_rank`` on q, k, v, o
  (:mod:`sve_jax.methods.lora_ensemble`).
* ``sve_factored`` and ``sve_compose``: SVE, M members, every projection decomposed
  (``llama.SVE_RULES``), run factored (``x → ·U → ·s_m → ·Vᵀ``, :mod:`sve_jax.execution`) or
  composed (each member's ``W_m`` rebuilt, :func:`sve_jax.compose`).
* ``deep_ensemble``: M full fine-tunes; parameters and AdamW state alone (``M × 3 × params``
  float32 numbers), arithmetic from the shapes, not compiled: it would not fit, and its step
  is M single fine-tunes.

Shardings come from :mod:`sve_jax.train.sharding`: a ``(data, member)`` mesh of all devices on
``data``; the batch split over ``data``; frozen weights (SVE's U and Vᵀ, the backbone of
LoRA and of inference) split FSDP-style over ``data`` (:func:`sharding.fsdp_shardings`), as
is the single fine-tune's whole state (params and moments: what an FSDP user would do);
ensemble trainables and moments on the member axis (:func:`sharding.state_shardings`; here of
size 1, so replicated: they are small). Each device count runs in its own subprocess, with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before jax starts.

Every set-up but inference and ``single_ft`` is built by :func:`sve_jax.methods.build`
(``single_ft``, ``lora_ensemble``, ``sve``) under ``jax.eval_shape``; every trained one is
stepped by :func:`sve_jax.train.steps.make_train_step`. The decoder has no fresh head: the LM
head's label rows classify for every member (a full fine-tune trains them with the rest).

Results: ``benchmarks/results/memory.json`` and the Markdown tables (``--tables=JSON``
prints them again).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from typing import Any

from absl import flags
from sve_jax.train import user_errors


def define_flags() -> None:
  """The command line; defined when run as a script, so tests can import the module beside
  other benchmarks (absl flags are global: several define --out, --batch, --members)."""
  flags.DEFINE_list('shapes', ['smollm2_135m', 'llama_1b', 'llama_7b'],
                    'Model shapes to measure (keys of SHAPES).')
  flags.DEFINE_list('devices', ['1', '8'], 'Simulated CPU device counts.')
  flags.DEFINE_list('remat', ['false', 'true'], 'Rematerialisation settings.')
  flags.DEFINE_list('setups', None, 'Subset of the compiled set-ups (default all).')
  flags.DEFINE_integer('batch', 8, 'Sequences per step.')
  flags.DEFINE_integer('length', 256, 'Tokens per sequence.')
  flags.DEFINE_integer('members', 16, 'M of the ensembles.')
  flags.DEFINE_integer('lora_rank', 8, 'LoRA-Ensemble rank.')
  flags.DEFINE_integer('label_tokens', 3, 'Classes (verbaliser tokens).')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                    "The decoder's computation dtype (params are float32 either way).")
  flags.DEFINE_string('out', None, 'Output JSON (default benchmarks/results/memory.json).')
  flags.DEFINE_string('tables', None, 'Print the tables of an earlier JSON and exit.')
  flags.DEFINE_bool('child', False, 'Internal: measure on this process\'s devices and '
                    'print one RESULT line (run with XLA_FLAGS set by the parent).')


#: Llama-family shapes (field names as HF's config.json): SmolLM2-135M, Llama-3.2-1B,
#: Llama-2-7B; 'tiny' is the test's.
SHAPES: dict[str, dict[str, Any]] = {
    'smollm2_135m': dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                         tie_word_embeddings=True, rope_theta=100000.),
    'llama_1b': dict(vocab_size=128256, hidden_size=2048, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192,
                     head_dim=64, tie_word_embeddings=True, rope_theta=500000.),
    'llama_7b': dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008,
                     tie_word_embeddings=False),
    'tiny': dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=48, tie_word_embeddings=True),
}
#: Compiled set-ups, in table order; the deep ensemble is arithmetic (see the docstring).
SETUPS = ('inference', 'single_ft', 'single_ft_method', 'lora_ensemble', 'sve_factored',
          'sve_compose')
_NAMES = {'inference': 'inference (1 model)', 'single_ft': 'single full fine-tune',
          'single_ft_method': 'single FT, as the method (M = 1 axis)',
          'lora_ensemble': 'LoRA-Ensemble', 'sve_factored': 'SVE, factored',
          'sve_compose': 'SVE, composed', 'deep_ensemble': 'deep ensemble'}
_GIB = 2.**30


# --------------------------------------------------------------------------------------------
# The measurement (in a child process, on its devices).
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
  """What one step trains on: sizes shared by every set-up."""
  batch: int = 8
  length: int = 256
  members: int = 16
  lora_rank: int = 8
  label_tokens: int = 3
  dtype: str = 'float32'


def _nbytes(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return int(sum(math.prod(np.shape(x)) * np.dtype(x.dtype).itemsize
                 for x in jax.tree_util.tree_leaves(tree)))


def factor_bytes(frozen) -> int:
  """Bytes of SVE's frozen factors: ``u`` and ``vh`` of every :class:`sve_jax.Factored`."""
  import jax  # pylint: disable=g-import-not-at-top
  from sve_jax import factorize  # pylint: disable=g-import-not-at-top
  nodes = jax.tree_util.tree_leaves(frozen, is_leaf=factorize.is_sve_node)
  return sum(_nbytes((n.u, n.vh)) for n in nodes if isinstance(n, factorize.Factored))


def make_backbone(shape: str, problem: Problem, remat: bool):
  """``(backbone, abstract inputs)``: the decoder of ``shape`` with abstract params."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sve_jax import models  # pylint: disable=g-import-not-at-top
  from sve_jax.models import llama  # pylint: disable=g-import-not-at-top
  config = llama.LlamaConfig(**SHAPES[shape])
  module = llama.LlamaDecoder(config, label_token_ids=tuple(range(problem.label_tokens)),
                              dtype=jnp.dtype(problem.dtype), remat=remat)
  tokens = jax.ShapeDtypeStruct((problem.batch, problem.length), jnp.int32)
  inputs = {'input_ids': tokens, 'attention_mask': tokens}
  params = jax.eval_shape(lambda k, x: module.init(k, x)['params'], jax.random.key(0), inputs)
  return models.Backbone('llama', module, params, tuple(llama.SVE_RULES), 'text',
                         attention_rules=tuple(llama.ATTENTION_RULES)), inputs


def abstract_setup(backbone, setup: str, problem: Problem):
  """``(frozen, trainables, forward)`` of a set-up, the trees as ``jax.ShapeDtypeStruct`` s.

  The methods' builders (SVE's decomposition included) run under ``jax.eval_shape``.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from sve_jax import methods  # pylint: disable=g-import-not-at-top
  if setup == 'single_ft':  # every weight trained, no member axis (see the module docstring)
    def forward(frozen, trainables, inputs, rng, train):
      del frozen, rng, train
      return backbone.apply(trainables, inputs)[None]
    return {}, backbone.params, forward
  method, execution = {'single_ft_method': ('single_ft', 'compose'),
                       'lora_ensemble': ('lora_ensemble', 'compose'),
                       'sve_factored': ('sve', 'factored'),
                       'sve_compose': ('sve', 'compose')}[setup]
  config = {'num_members': problem.members, 'noise_std': 0.01, 'execution': execution,
            'lora_rank': problem.lora_rank, 'seed': 0}
  built = {}

  def build(params, key):
    built['setup'] = methods.build(method, dataclasses.replace(backbone, params=params),
                                   config, key)
    return built['setup'].frozen, built['setup'].trainables

  frozen, trainables = jax.eval_shape(build, backbone.params, jax.random.key(0))
  return frozen, trainables, built['setup'].forward


def compiled_bytes(compiled) -> dict[str, int]:
  """XLA's per-device account of a compiled step (see the module docstring)."""
  stats = compiled.memory_analysis()
  out = {'argument_bytes': int(stats.argument_size_in_bytes),
         'output_bytes': int(stats.output_size_in_bytes),
         'temp_bytes': int(stats.temp_size_in_bytes),
         'alias_bytes': int(stats.alias_size_in_bytes)}
  out['total_bytes'] = (out['argument_bytes'] + out['output_bytes'] + out['temp_bytes']
                        - out['alias_bytes'])
  return out


def measure(shape: str, setup: str, remat: bool, problem: Problem) -> dict[str, Any]:
  """One compiled step of ``setup`` on this process's devices: bytes per device, and the
  global bytes of its frozen tree, trainables and optimiser state."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sve_jax.train import sharding  # pylint: disable=g-import-not-at-top
  from sve_jax.train import state as train_state  # pylint: disable=g-import-not-at-top
  from sve_jax.train import steps  # pylint: disable=g-import-not-at-top
  backbone, inputs = make_backbone(shape, problem, remat)
  mesh = sharding.make_mesh(jax.device_count(), 1)
  row = {'shape': shape, 'setup': setup, 'devices': jax.device_count(), 'remat': remat}
  if setup == 'inference':
    params_sh = sharding.fsdp_shardings(mesh, backbone.params)
    step = jax.jit(backbone.apply, in_shardings=(params_sh, sharding.batch_sharding(mesh)),
                   out_shardings=sharding.batch_sharding(mesh))
    row.update(compiled_bytes(step.lower(backbone.params, inputs).compile()))
    row.update(frozen_bytes=_nbytes(backbone.params), factor_bytes=0, trainable_bytes=0,
               optimizer_bytes=0)
    return row
  frozen, trainables, forward = abstract_setup(backbone, setup, problem)
  optimizer = train_state.make_optimizer(1e-3, total_steps=1000, warmup_steps=10)
  state = jax.eval_shape(lambda t, k: train_state.create_train_state(t, optimizer, k),
                         trainables, jax.random.key(1))
  if setup.startswith('single_ft'):  # one model: its whole state FSDP-style
    state_sh = sharding.fsdp_shardings(mesh, state)
  else:
    state_sh = sharding.state_shardings(mesh, state)
  batch = {'inputs': inputs, 'label': jax.ShapeDtypeStruct((problem.batch,), jnp.int32)}
  step = jax.jit(steps.make_train_step(forward, optimizer),
                 in_shardings=(state_sh, sharding.fsdp_shardings(mesh, frozen),
                               sharding.batch_sharding(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
  row.update(compiled_bytes(step.lower(state, frozen, batch).compile()))
  row.update(frozen_bytes=_nbytes(frozen), factor_bytes=factor_bytes(frozen),
             trainable_bytes=_nbytes(state.trainables),
             optimizer_bytes=_nbytes(state.opt_state))
  return row


def model_facts(shape: str, problem: Problem) -> dict[str, Any]:
  """One model's parameters and bytes, and the deep ensemble's parameter memory (arithmetic:
  M copies of the params and of AdamW's two moments, float32)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  backbone, _ = make_backbone(shape, problem, False)
  params = sum(math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(backbone.params))
  weight_bytes = _nbytes(backbone.params)
  return {'config': SHAPES[shape], 'params': int(params), 'weight_bytes': weight_bytes,
          'deep_ensemble': {'members': problem.members, 'frozen_bytes': 0, 'factor_bytes': 0,
                            'trainable_bytes': problem.members * weight_bytes,
                            'optimizer_bytes': problem.members * 2 * weight_bytes}}


def run_child(shapes, setups, remats, problem: Problem) -> list[dict[str, Any]]:
  rows = []
  for shape in shapes:
    for setup in setups:
      for remat in ([False] if setup == 'inference' else remats):
        row = measure(shape, setup, remat, problem)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
  return rows


# --------------------------------------------------------------------------------------------
# The parent: one child per device count, then goals and tables.
# --------------------------------------------------------------------------------------------


def _start_child(devices: int, argv: list[str]) -> subprocess.Popen:
  """A child process measuring on ``devices`` simulated CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={devices}').strip())
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.Popen([sys.executable, '-m', 'benchmarks.memory', '--child'] + argv,
                          env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _child_rows(devices: int, child: subprocess.Popen) -> list[dict[str, Any]]:
  stdout, stderr = child.communicate()
  if child.returncode:
    raise RuntimeError(f'{devices}-device child failed:\n{stderr[-5000:]}')
  line = [l for l in stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


def parameter_memory(row: dict[str, Any]) -> int:
  """Frozen tree + trainables + optimiser state, all devices together."""
  return row['frozen_bytes'] + row['trainable_bytes'] + row['optimizer_bytes']


def summarise(results: dict[str, Any]) -> None:
  """Adds each row's ratios and the two goals (in place)."""
  for shape, entry in results['shapes'].items():
    weights = entry['weight_bytes']
    rows = entry['rows']
    single = {(r['devices'], r['remat']): r for r in rows if r['setup'] == 'single_ft'}
    for r in rows:
      r['parameter_bytes'] = parameter_memory(r)
      r['parameter_vs_weights'] = r['parameter_bytes'] / weights
      ref = single.get((r['devices'], r['remat']))
      if ref:
        r['total_vs_single_ft'] = r['total_bytes'] / ref['total_bytes']
    deep = entry['deep_ensemble']
    deep['parameter_bytes'] = parameter_memory(deep)
    deep['parameter_vs_weights'] = deep['parameter_bytes'] / weights
  goals = {}
  big = results['shapes'].get('llama_7b')
  if big:
    sve = [r for r in big['rows'] if r['setup'].startswith('sve')]
    if sve:
      ratio = max(r['parameter_vs_weights'] for r in sve)
      goals['parameter_memory_7b'] = {
          'ratio_to_weights': ratio, 'limit': 2.1, 'met': ratio <= 2.1,
          'factor_bytes': sve[0]['factor_bytes'], 'frozen_bytes': sve[0]['frozen_bytes'],
          'trainable_bytes': sve[0]['trainable_bytes'],
          'optimizer_bytes': sve[0]['optimizer_bytes'], 'weight_bytes': big['weight_bytes']}
  # Goal 2, per model and device count: SVE's leanest step (path and remat as a user would
  # choose them) against the single fine-tune's leanest.
  fits = []
  for shape, entry in results['shapes'].items():
    for devices in sorted({r['devices'] for r in entry['rows']}):
      rows = [r for r in entry['rows'] if r['devices'] == devices]
      sve = [r for r in rows if r['setup'].startswith('sve')]
      single = [r for r in rows if r['setup'] == 'single_ft']
      if not sve or not single:
        continue
      best, ref = (min(group, key=lambda r: r['total_bytes']) for group in (sve, single))
      fits.append({'shape': shape, 'devices': devices,
                   'sve': {k: best[k] for k in ('setup', 'remat', 'total_bytes')},
                   'single_ft': {k: ref[k] for k in ('remat', 'total_bytes')},
                   'ratio': best['total_bytes'] / ref['total_bytes'],
                   'met': best['total_bytes'] <= ref['total_bytes']})
  goals['step_fits_where_single_ft_fits'] = fits
  results['goals'] = goals


def _gib(x) -> str:
  return f'{x / _GIB:.2f}'


def parameter_table(results: dict[str, Any]) -> str:
  """Parameter memory, all devices together (GiB), per shape and set-up."""
  lines = ['| model | set-up | frozen | of which U, Vᵀ | trainable | AdamW state | total | '
           '÷ one model\'s weights |', '|' + '---|' * 8]
  for shape, entry in results['shapes'].items():
    seen = {}
    for r in entry['rows']:
      seen.setdefault(r['setup'], r)
    for setup in list(SETUPS) + ['deep_ensemble']:
      r = entry['deep_ensemble'] if setup == 'deep_ensemble' else seen.get(setup)
      if r is None:
        continue
      factors = _gib(r['factor_bytes']) if r['factor_bytes'] else ''
      name = _NAMES[setup] + (' (arithmetic)' if setup == 'deep_ensemble' else '')
      lines.append(f'| {shape} | {name} | {_gib(r["frozen_bytes"])} | {factors} | '
                   f'{_gib(r["trainable_bytes"])} | {_gib(r["optimizer_bytes"])} | '
                   f'{_gib(r["parameter_bytes"])} | {r["parameter_vs_weights"]:.2f} |')
  return '\n'.join(lines)


def step_table(results: dict[str, Any]) -> str:
  """One training step, per device (GiB), per shape, set-up, remat and device count."""
  lines = ['| model | set-up | remat | devices | arguments | outputs | temporaries | aliased | '
           'total | ÷ single FT |', '|' + '---|' * 10]
  for shape, entry in results['shapes'].items():
    order = {s: i for i, s in enumerate(SETUPS)}
    rows = sorted(entry['rows'], key=lambda r: (order[r['setup']], r['remat'], r['devices']))
    for r in rows:
      ratio = f'{r["total_vs_single_ft"]:.2f}' if 'total_vs_single_ft' in r else ''
      remat = '–' if r['setup'] == 'inference' else ('yes' if r['remat'] else 'no')
      lines.append(_markdown_row(
          shape, _NAMES[r['setup']], remat, r['devices'],
          *(_gib(r[f'{k}_bytes']) for k in ('argument', 'output', 'temp', 'alias', 'total')),
          ratio))
  return '\n'.join(lines)


def _markdown_row(*cells: Any) -> str:
  return '| ' + ' | '.join(str(c) for c in cells) + ' |'


def _yes_no(flag: bool) -> str:
  return 'yes' if flag else 'no'


def goals_text(results: dict[str, Any]) -> str:
  """The two goals, as lines of Markdown."""
  goals = results.get('goals', {})
  lines = []
  first = goals.get('parameter_memory_7b')
  if first:
    lines.append(f'1. SVE M = {results["problem"]["members"]} parameter memory at 7B: '
                 f'{_gib(first["frozen_bytes"] + first["trainable_bytes"] + first["optimizer_bytes"])}'
                 f' GiB = {first["ratio_to_weights"]:.2f} x one model\'s weights '
                 f'({_gib(first["weight_bytes"])} GiB); limit {first["limit"]}: '
                 f'{"met" if first["met"] else "NOT met"}.')
  lines += ['', '| model | devices | SVE, leanest step | GiB | single FT, leanest | GiB | '
            'ratio | fits |', '|' + '---|' * 8]
  for g in goals.get('step_fits_where_single_ft_fits', []):
    sve, ref = g['sve'], g['single_ft']
    lines.append(_markdown_row(
        g['shape'], g['devices'], f'{_NAMES[sve["setup"]]}, remat {_yes_no(sve["remat"])}',
        _gib(sve['total_bytes']), f'remat {_yes_no(ref["remat"])}', _gib(ref['total_bytes']),
        f'{g["ratio"]:.2f}', _yes_no(g['met'])))
  return '\n'.join(lines)


def _print_tables(results: dict[str, Any]) -> None:
  print('\nParameter memory, all devices together (GiB)\n' + parameter_table(results))
  print('\nOne training step, per device (GiB)\n' + step_table(results))
  print('\nGoals\n' + goals_text(results))


def main(argv):
  del argv
  if flags.FLAGS.tables:
    with open(flags.FLAGS.tables) as f:
      _print_tables(json.load(f))
    return
  problem = Problem(flags.FLAGS.batch, flags.FLAGS.length, flags.FLAGS.members, flags.FLAGS.lora_rank,
                    flags.FLAGS.label_tokens, flags.FLAGS.dtype)
  setups = flags.FLAGS.setups or list(SETUPS)
  remats = [r.lower() in ('1', 'true', 'yes') for r in flags.FLAGS.remat]
  if flags.FLAGS.child:
    rows = run_child(flags.FLAGS.shapes, setups, remats, problem)
    print('RESULT ' + json.dumps(rows), flush=True)
    return
  argv = [f'--shapes={",".join(flags.FLAGS.shapes)}', f'--setups={",".join(setups)}',
          f'--remat={",".join(flags.FLAGS.remat)}', f'--batch={problem.batch}',
          f'--length={problem.length}', f'--members={problem.members}',
          f'--lora_rank={problem.lora_rank}', f'--label_tokens={problem.label_tokens}',
          f'--dtype={problem.dtype}']
  results = {'problem': dataclasses.asdict(problem), 'shapes': {}}
  for shape in flags.FLAGS.shapes:
    results['shapes'][shape] = {**model_facts(shape, problem), 'rows': []}
  # The device counts' children compile side by side (XLA's CPU compiler is mostly serial).
  children = {int(d): _start_child(int(d), argv) for d in flags.FLAGS.devices}
  for devices, child in children.items():
    for row in _child_rows(devices, child):
      results['shapes'][row['shape']]['rows'].append(row)
  summarise(results)
  out = flags.FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                   'memory.json')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(results, f, indent=1)
  _print_tables(results)
  print(f'wrote {out}')


if __name__ == '__main__':
  define_flags()
  user_errors.run_cli(main)
