r"""EfficientNet-Lite0's convs: XLA's convolutions against ``DepthwiseConv`` and ``PointwiseConv``.

  python -m benchmarks.lite_convs                # ~3 minutes on 2 CPU cores
  python -m benchmarks.lite_convs --image_size=96 --batch=32 --members=4

Times, side by side in one process ("XLA conv" against ours; medians, ratio XLA ÷ ours, and
the largest output difference):
* each distinct depthwise conv of Lite0 at the given input size: ``nn.Conv(
  feature_group_count=C)`` against :class:`~sve_jax.models.efficientnet_lite.DepthwiseConv`,
  forward and the gradient with respect to kernel and input (a full fine-tune needs both);
* the whole network, forward and the gradient of a cross-entropy with respect to every
  parameter, once as one model and once vmapped over ``--members`` members' own params (a
  deep ensemble's step), built with XLA convs throughout against the model as it ships
  (:class:`DepthwiseConv`, and :class:`PointwiseConv` for the 1×1 convs).
Random weights: the time does not depend on the values.
"""
from __future__ import annotations

import json
import os
from unittest import mock

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import common
from sve_jax.models import efficientnet_lite
from sve_jax.train import user_errors

def depthwise_shapes(image_size: int) -> list[tuple[int, int, int, int]]:
  """Distinct ``(input size, channels, kernel, stride)`` of Lite0's depthwise convs."""
  size = -(-image_size // 2)  # after the stride-2 stem
  shapes = []
  for spec in efficientnet_lite.lite0_blocks():
    shape = (size, spec.in_features * spec.expand_ratio, spec.kernel_size, spec.stride)
    if shape not in shapes:
      shapes.append(shape)
    size = -(-size // spec.stride)
  return shapes


def _time_pair(grouped, ours, args, repeats: int) -> dict[str, float]:
  """Times two jitted functions alternately (median of ``repeats`` each), after a first call
  (which compiles, unless already done)."""
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                      grouped(*args), ours(*args))
  times = {'grouped_s': [], 'ours_s': []}
  for _ in range(repeats):
    times['grouped_s'].append(common.median_time(lambda: grouped(*args), 1, 1))
    times['ours_s'].append(common.median_time(lambda: ours(*args), 1, 1))
  row = {k: float(sorted(v)[len(v) // 2]) for k, v in times.items()}
  row['grouped_over_ours'] = row['grouped_s'] / row['ours_s']
  row['max_abs_diff'] = max(jax.tree.leaves(diff))
  return row


def layer_rows(batch: int, image_size: int, repeats: int,
               shapes: list[tuple[int, int, int, int]] | None = None) -> list[dict]:
  """Forward and gradient of each distinct depthwise conv (or of ``shapes``), grouped conv
  against ours."""
  rows = []
  for size, channels, kernel, stride in shapes or depthwise_shapes(image_size):
    args = dict(features=channels, kernel_size=(kernel, kernel), strides=stride,
                padding='SAME', feature_group_count=channels, use_bias=False)
    grouped, ours = nn.Conv(**args), efficientnet_lite.DepthwiseConv(**args)
    x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
    params = grouped.init(jax.random.key(1), x)
    loss = lambda module: lambda p, x: jnp.sum(module.apply(p, x) ** 2)
    for kind, make in (('forward', lambda m: m.apply),
                       ('gradient', lambda m: jax.grad(loss(m), (0, 1)))):
      layer = f'depthwise {size}×{size}×{channels}, k{kernel} s{stride}'
      pair = _time_pair(jax.jit(make(grouped)), jax.jit(make(ours)), (params, x), repeats)
      rows.append({'layer': layer, 'kind': kind, **pair})
  return rows


def network_rows(batch: int, image_size: int, repeats: int, members: int = 1) -> list[dict]:
  """Forward and full gradient of the whole network (vmapped over ``members`` members' own
  params if > 1), built with XLA convs against ours."""
  model = efficientnet_lite.EfficientNetLite0(num_classes=10)
  images = jax.random.normal(jax.random.key(0), (batch, image_size, image_size, 3))
  params = model.init(jax.random.key(1), images)['params']
  # A random head: the zero-initialised one would make every logit, and the backbone's
  # gradient, zero.
  params['head']['kernel'] = 0.05 * jax.random.normal(jax.random.key(2),
                                                      params['head']['kernel'].shape)
  labels = jnp.arange(batch) % 10
  if members > 1:
    params = jax.tree.map(lambda x: jnp.stack([x * (1. + 0.01 * m) for m in range(members)]),
                          params)

  def make(kind: str):
    def forward(p):
      return model.apply({'params': p}, images)

    def loss(p):
      logits = forward(p)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
    fn = forward if kind == 'forward' else jax.grad(loss)
    return jax.vmap(fn) if members > 1 else fn

  rows = []
  for kind in ('forward', 'gradient'):
    ours, grouped = jax.jit(make(kind)), jax.jit(make(kind))
    # The same model built with XLA convs only: traced (and cached by jit) under the patch.
    with mock.patch.object(efficientnet_lite, 'DepthwiseConv', nn.Conv), \
         mock.patch.object(efficientnet_lite, 'PointwiseConv', nn.Conv):
      jax.block_until_ready(grouped(params))
    row = _time_pair(grouped, ours, (params,), repeats)
    who = f'{members} members vmapped' if members > 1 else 'one model'
    rows.append({'layer': f'whole network, {who}, {batch} × {image_size} px', 'kind': kind,
                 **row})
  return rows


def markdown_table(rows: list[dict]) -> str:
  lines = ['| layer | pass | XLA conv ms | ours ms | XLA ÷ ours | max diff |',
           '|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['layer']} | {r['kind']} | {1e3 * r['grouped_s']:.1f} | "
                 f"{1e3 * r['ours_s']:.1f} | {r['grouped_over_ours']:.1f} | "
                 f"{r['max_abs_diff']:.1e} |")
  return '\n'.join(lines)


def define_flags() -> None:
  """The command line; defined when run as a script, so tests can import the module beside
  other benchmarks (absl flags are global: several define --repeats)."""
  flags.DEFINE_integer('image_size', 64, 'Input height and width.')
  flags.DEFINE_integer('batch', 32, 'Images per batch.')
  flags.DEFINE_integer('repeats', 5, 'Timed runs per variant (median).')
  flags.DEFINE_integer('members', 4, 'Members of the vmapped whole-network rows.')
  flags.DEFINE_string('out', None, 'Output JSON (default benchmarks/results/).')


def main(argv):
  del argv
  args = flags.FLAGS
  size = (args.batch, args.image_size, args.repeats)
  rows = (layer_rows(*size) + network_rows(*size)
          + network_rows(*size, members=args.members))
  out = args.out or os.path.join('benchmarks', 'results', 'lite_convs.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump({'image_size': args.image_size, 'batch': args.batch, 'members': args.members,
               'device': str(jax.devices()[0]), 'rows': rows}, f, indent=2)
  print(markdown_table(rows))


if __name__ == '__main__':
  define_flags()
  user_errors.run_cli(main)
