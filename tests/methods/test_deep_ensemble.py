"""Deep ensemble: M full copies of the backbone, each with its own head."""

import jax
import numpy as np

from sve_jax import methods
from sve_jax import tree
# pytest finds the fixtures tiny and built by these names.
from tiny_methods import M, built, member_of, method_config, tiny


def test_deep_ensemble_members_share_the_backbone_but_not_the_head(tiny, built):
  backbone, _, _ = tiny
  setup = built('deep_ensemble')
  assert setup.frozen == {} and setup.trainable_per_member == tree.num_params(backbone.params)
  for m in range(M):
    member = member_of(setup.trainables, m)
    jax.tree_util.tree_map(np.testing.assert_array_equal,
                           {k: v for k, v in member.items() if k != 'head'},
                           {k: v for k, v in backbone.params.items() if k != 'head'})
    np.testing.assert_array_equal(member['head']['bias'], 0.)
  kernels = np.asarray(setup.trainables['head']['kernel'])
  assert np.all(kernels != 0) and np.abs(kernels).max() < 0.06  # N(0, 0.01²), 48 draws/member
  assert all(not np.allclose(kernels[i], kernels[j]) for i in range(M) for j in range(i))
  # Member m's head comes from its own key: the same whatever M is.
  fewer = methods.build('deep_ensemble', backbone, method_config(num_members=2), jax.random.key(2))
  np.testing.assert_array_equal(fewer.trainables['head']['kernel'], kernels[:2])
