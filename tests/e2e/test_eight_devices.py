"""One device vs 8 simulated CPU devices: same loss, same update, batch really split."""
import textwrap

import numpy as np
import pytest

from conftest import run_on_eight_cpu_devices

pytestmark = pytest.mark.e2e

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[1] + '/tests')
    import sve_jax
    from sve_jax.methods import sve as sve_method
    from sve_jax.train import sharding, steps
    from sve_jax.train import state as train_state
    from conftest import TinyNet

    model = TinyNet()
    images = jax.random.normal(jax.random.key(0), (16, 6, 6, 3))
    labels = jnp.arange(16) % 3
    params = model.init(jax.random.key(1), images)['params']
    frozen, s = sve_jax.decompose(params)
    forward = sve_method.make_forward(sve_jax.make_sve_apply(lambda p, x: model.apply({'params': p}, x)))
    # Plain SGD: Adam would amplify f32 round-off in leaves whose exact gradient is 0
    # (attention key biases) into lr-sized steps of random sign.
    optimizer = optax.sgd(0.5)
    results = {'devices': jax.device_count()}
    for name, data, member in [('one', 1, 1), ('data8', 8, 1), ('data4_member2', 4, 2)]:
      devices = jax.devices()[:data * member]
      mesh = sharding.make_mesh(data, member, devices=devices)
      trainables = sve_jax.init_members(jax.random.key(2), frozen, s, 4)
      state = train_state.create_train_state(trainables, optimizer, jax.random.key(3))
      state = sharding.place(state, sharding.state_shardings(mesh, state))
      step = sharding.jit_train_step(steps.make_train_step(forward, optimizer), mesh, state, frozen)
      batch = sharding.shard_batch({'inputs': np.asarray(images), 'label': np.asarray(labels)}, mesh)
      losses = []
      for _ in range(3):
        state, metrics = step(state, frozen, batch)
        losses.append(float(metrics['loss']))
      s_leaf = state.trainables['Dense_0']['kernel']
      results[name] = {
          'losses': losses,
          'trainables': [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(state.trainables)],
          'batch_devices': len(batch['inputs'].sharding.device_set),
          'batch_shard_rows': sorted({sh.data.shape[0] for sh in batch['inputs'].addressable_shards}),
          'member_shard_rows': sorted({sh.data.shape[0] for sh in s_leaf.addressable_shards}),
      }
    print('RESULT' + json.dumps(results))
''')


def test_one_device_and_eight_devices_agree():
  res = run_on_eight_cpu_devices(SCRIPT)
  assert res['devices'] == 8
  one = res['one']
  for name in ('data8', 'data4_member2'):
    other = res[name]
    np.testing.assert_allclose(other['losses'], one['losses'], rtol=1e-5, atol=1e-6)
    for a, b in zip(other['trainables'], one['trainables']):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  assert one['batch_devices'] == 1 and one['batch_shard_rows'] == [16]
  assert res['data8']['batch_devices'] == 8 and res['data8']['batch_shard_rows'] == [2]
  assert res['data4_member2']['batch_shard_rows'] == [4]
  # Member axis of the trainables split over the 2-way member axis: 2 of 4 members each.
  assert res['data4_member2']['member_shard_rows'] == [2]
  assert res['data8']['member_shard_rows'] == [4]
