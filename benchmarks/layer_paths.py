r"""The ``auto`` cost model against measured times, one layer at a time.

  python -m benchmarks.layer_paths               # MiniLM / BERT-base shapes, ~3 min on 2 cores

For each kernel shape and number of positions N it times a train step's worth of work on one
decomposed layer with M members (forward, then the gradients of the input and of ``s``), on
the compose path (``W_m = U diag(s_m) Vᵀ`` per member, then ``x_m·W_m``) and on the factored
path (``((x_m·U) ⊙ s_m)·Vᵀ``), and prints the measured factored ÷ compose time beside the
ratio :func:`sve_jax.execution.path_costs` predicts. Runs alternate between the two paths.
"""
from __future__ import annotations

import json

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from sve_jax import execution
from sve_jax.train import user_errors

_MEMBERS = flags.DEFINE_integer('members', 4, 'Ensemble size M.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed runs per path (median).')
_OUT = flags.DEFINE_string('out', None, 'Optional output JSON.')

SHAPES = ((384, 384), (384, 1536), (1536, 384), (768, 768), (768, 3072))
POSITIONS = (256, 640, 1024, 2048)


def _compose(x, u, s, vh):
  w = jax.vmap(lambda s_m: (u * jnp.maximum(s_m, 0.)) @ vh)(s)
  return jnp.einsum('mni,mio->mno', x, w)


def _factored(x, u, s, vh):
  t = jnp.einsum('mni,ir->mnr', x, u) * jnp.maximum(s, 0.)[:, None, :]
  return jnp.einsum('mnr,ro->mno', t, vh)


def _train_work(layer):
  """Gradients of a nonlinear loss w.r.t. the input and s: what a train step needs."""
  return jax.jit(jax.grad(lambda x, u, s, vh: jnp.sum(layer(x, u, s, vh) ** 2), argnums=(0, 2)))


def measure(d_in: int, d_out: int, n: int, members: int, repeats: int) -> dict[str, float]:
  rng = np.random.default_rng(0)
  r = min(d_in, d_out)
  u = jnp.asarray(np.linalg.qr(rng.normal(size=(d_in, r)))[0], jnp.float32)
  vh = jnp.asarray(np.linalg.qr(rng.normal(size=(d_out, r)))[0].T, jnp.float32)
  s = jnp.ones((members, r), jnp.float32)
  x = jnp.asarray(rng.normal(size=(members, n, d_in)), jnp.float32)
  fns = {'compose': _train_work(_compose), 'factored': _train_work(_factored)}
  times = {k: [] for k in fns}
  for fn in fns.values():
    jax.block_until_ready(fn(x, u, s, vh))
  for _ in range(repeats):
    for k, fn in fns.items():
      times[k].append(common.median_time(lambda fn=fn: fn(x, u, s, vh), 1, 3))
  measured = {k: float(np.median(v)) for k, v in times.items()}
  costs = execution.path_costs(n, d_in, d_out, r, training=True)
  return {'d_in': d_in, 'd_out': d_out, 'positions': n, **{f'{k}_s': v for k, v in
                                                           measured.items()},
          'measured_factored_over_compose': measured['factored'] / measured['compose'],
          'model_factored_over_compose': costs['factored'] / costs['compose'],
          'model_prefers_factored': costs['factored'] < costs['compose']}


def main(argv):
  del argv
  rows = []
  print('| d_in × d_out | N | compose ms | factored ms | measured f ÷ c | model f ÷ c |')
  print('|---|---|---|---|---|---|')
  for d_in, d_out in SHAPES:
    for n in POSITIONS:
      row = measure(d_in, d_out, n, _MEMBERS.value, _REPEATS.value)
      rows.append(row)
      print(f'| {d_in} × {d_out} | {n} | {row["compose_s"] * 1e3:.1f} | '
            f'{row["factored_s"] * 1e3:.1f} | {row["measured_factored_over_compose"]:.2f} | '
            f'{row["model_factored_over_compose"]:.2f} |', flush=True)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump({'members': _MEMBERS.value, 'device': jax.devices()[0].device_kind,
                 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  user_errors.run_cli(main)
