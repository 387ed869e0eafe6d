r"""XLA's matrix-multiply throughput against torch's, at the shapes of the vs_torch step.

  python -m benchmarks.matmul_rate               # ~1 minute on 2 CPU cores

The vs_torch comparison (MiniLM-L6, 16 x 64 tokens, M = 4) is bound by matrix products: a
``perf`` profile puts ~70% of sve_jax's step in them. This times one product of each shape
that step runs, ``(rows, d_in) @ (d_in, d_out)`` in float32, in jax (jitted) and in torch
(its own thread pool, one thread per core), alternating, and reports GFLOP/s and
torch ÷ jax. With the step's multiply-add ratio (``sve_jax.execution.path_costs``), that
bounds the step-time ratio a faster formula alone could reach: ours ÷ torch's ≥
(our multiply-adds ÷ torch's) × (torch's rate ÷ ours).
"""
from __future__ import annotations

import json
import os

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from sve_jax.train import user_errors

_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed runs per library and shape (median).')
_OUT = flags.DEFINE_string('out', None, 'Output JSON (default benchmarks/results/).')

#: (rows, d_in, d_out): members x positions = 4 x 1024 rows through MiniLM's kernels (the
#: factored path's U and V products), and one member's 1024 rows (torch's per-member bmm).
SHAPES = ((4096, 384, 384), (4096, 384, 1536), (4096, 1536, 384),
          (1024, 384, 384), (1024, 384, 1536), (1024, 1536, 384))


def rates(rows: int, d_in: int, d_out: int, repeats: int) -> dict[str, float]:
  """GFLOP/s of ``(rows, d_in) @ (d_in, d_out)`` in jax and torch, alternating runs."""
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.normal(size=(rows, d_in)).astype(np.float32)
  w = rng.normal(size=(d_in, d_out)).astype(np.float32)
  jx, jw = jnp.asarray(x), jnp.asarray(w)
  tx, tw = torch.from_numpy(x), torch.from_numpy(w)
  dot = jax.jit(jnp.matmul)
  runs = {'jax': lambda: jax.block_until_ready(dot(jx, jw)), 'torch': lambda: tx @ tw}
  times = {key: [] for key in runs}
  for _ in range(repeats):
    for key, run in runs.items():
      times[key].append(common.median_time(run, 1, 5))
  flops = 2. * rows * d_in * d_out
  return {key: flops / float(np.median(v)) / 1e9 for key, v in times.items()}


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  out = _OUT.value or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                   'matmul_rate_cpu.json')
  results = {'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
             'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
             'repeats': _REPEATS.value, 'shapes': []}
  print('| rows × d_in × d_out | jax GFLOP/s | torch GFLOP/s | torch ÷ jax |\n|---|---|---|---|')
  for rows, d_in, d_out in SHAPES:
    entry = {'shape': [rows, d_in, d_out], **rates(rows, d_in, d_out, _REPEATS.value)}
    results['shapes'].append(entry)
    print(f'| {rows} × {d_in} × {d_out} | {entry["jax"]:.0f} | {entry["torch"]:.0f} | '
          f'{entry["torch"] / entry["jax"]:.2f} |', flush=True)
  with open(out, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {out}')


if __name__ == '__main__':
  user_errors.run_cli(main)
