"""Mesh and shardings, in process on the one CPU device (eight devices: tests/e2e)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax.train import sharding


def test_the_mesh_takes_every_device_and_names_the_config_keys_it_cannot_tile():
  mesh = sharding.make_mesh()
  assert dict(mesh.shape) == {sharding.DATA: jax.device_count(), sharding.MEMBER: 1}
  n = jax.device_count()
  with pytest.raises(ValueError, match=rf'config.mesh.member={n + 1} must be >= 1 and divide'):
    sharding.make_mesh(member=n + 1)
  with pytest.raises(ValueError, match='config.mesh.data=2 x config.mesh.member=1 must equal'):
    sharding.make_mesh(data=2 * n)


def test_member_axes_split_and_scalars_replicate():
  mesh = sharding.make_mesh()
  shardings = sharding.per_member_shardings(mesh, {'s': jnp.ones((4, 3)), 'count': jnp.int32(0)})
  assert shardings['s'].spec == jax.sharding.PartitionSpec(sharding.MEMBER)
  assert shardings['count'].spec == jax.sharding.PartitionSpec()


def test_a_batch_is_placed_whole_on_one_process_and_comes_back_equal():
  mesh = sharding.make_mesh()
  batch = {'inputs': np.arange(12.).reshape(4, 3), 'label': np.arange(4)}
  placed = sharding.shard_batch(batch, mesh)
  jax.tree_util.tree_map(np.testing.assert_array_equal, sharding.to_host(placed), batch)
  sharding.check_batch_divisible(4, mesh)
  sharding.check_members_divisible(4, mesh)


def test_frozen_shardings_follow_the_layout_and_refuse_others():
  mesh = sharding.make_mesh(1, 1)
  tree = {'u': np.zeros((4, 2)), 'b': np.zeros(3)}
  assert sharding.frozen_shardings(mesh, tree) == sharding.replicated_shardings(mesh, tree)
  assert sharding.frozen_shardings(mesh, tree, 'fsdp') == sharding.fsdp_shardings(mesh, tree)
  with pytest.raises(ValueError, match=r"config\.mesh\.frozen='zero3' must be one of "
                                       r"\('replicated', 'fsdp'\)"):
    sharding.check_frozen_layout('zero3', 'config.mesh.frozen')
