"""FSDP-style shardings of frozen leaves (``sharding.fsdp_shardings``) on 8 simulated devices."""
import textwrap

import pytest

from conftest import run_on_eight_cpu_devices

pytestmark = pytest.mark.e2e

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, sys.argv[1])
    import sve_jax
    from sve_jax.train import sharding

    params = {'layers': {'q': {'kernel': np.ones((3, 16, 24), np.float32),
                               'bias': np.ones((3, 24), np.float32)},
                         'norm': {'scale': np.ones((3, 5), np.float32)}},
              'odd': np.ones((9, 10), np.float32), 'step': np.zeros((), np.int32)}
    rules = ((r'q/kernel$', sve_jax.Decompose(stack_axes=1)), (r'q/bias$', 'member'))
    frozen, _ = sve_jax.decompose(params, rules=rules)
    mesh = sharding.make_mesh(8, 1)
    placed = sharding.place(frozen, sharding.fsdp_shardings(mesh, frozen))
    abstract = jax.eval_shape(lambda t: t, frozen)
    results = {'devices': jax.device_count(), 'leaves': {}}
    for (path, leaf), spec in zip(
        jax.tree_util.tree_flatten_with_path(placed)[0],
        jax.tree_util.tree_leaves(sharding.fsdp_shardings(mesh, abstract))):
      name = jax.tree_util.keystr(path)
      results['leaves'][name] = {
          'shape': list(leaf.shape), 'spec': [str(a) for a in spec.spec],
          'shard_shapes': sorted({tuple(s.data.shape) for s in leaf.addressable_shards}),
          'device_bytes': sorted({s.data.nbytes for s in leaf.addressable_shards}),
          'devices': len(leaf.sharding.device_set)}
    one = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    results['one_device_specs'] = sorted({len(s.spec) for s in
                                          jax.tree_util.tree_leaves(sharding.fsdp_shardings(one, frozen))})
    print('RESULT' + json.dumps(results))
''')


def test_fsdp_shardings_split_the_largest_divisible_axis_over_data():
  res = run_on_eight_cpu_devices(SCRIPT)
  assert res['devices'] == 8
  leaves = {k: v for k, v in res['leaves'].items()}
  # SVE's U (3, 16, 16) and Vᵀ (3, 16, 24): the largest axis 8 divides is split, 1/8 per device.
  u = next(v for k, v in leaves.items() if k.endswith('.u'))
  vh = next(v for k, v in leaves.items() if k.endswith('.vh'))
  assert u['shape'] == [3, 16, 16] and u['spec'] == ['None', 'data', 'None']  # tie: first axis
  assert u['shard_shapes'] == [[3, 2, 16]] and u['devices'] == 8
  assert vh['shape'] == [3, 16, 24] and vh['spec'] == ['None', 'None', 'data']
  assert vh['shard_shapes'] == [[3, 16, 3]]
  assert vh['device_bytes'] == [3 * 16 * 24 * 4 // 8]
  # No axis divisible by 8: replicated, whole on every device (norm scales, odd shapes, scalars).
  for key in ("['layers']['norm']['scale']", "['odd']", "['step']"):
    assert leaves[key]['spec'] == [], key
    assert leaves[key]['shard_shapes'] == [leaves[key]['shape']], key
  # On a size-1 data axis everything is replicated.
  assert res['one_device_specs'] == [0]
