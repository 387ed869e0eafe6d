"""The trainables file: a round trip, and refusal of another backbone's factors."""
import jax
import numpy as np
import pytest

from sve_jax import export


def test_trainables_file_round_trips_and_rejects_another_backbone(tmp_path, tiny):
  import sve_jax
  _, params, _ = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 3)
  path = export.save_trainables(str(tmp_path / 't.safetensors'), trainables, {'M': 3}, frozen)
  loaded, meta = export.load_trainables(path, frozen)
  assert meta['M'] == 3
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.device_get(trainables))
  other = jax.tree_util.tree_map(lambda x: x * 2 if hasattr(x, 'shape') else x, params)
  other_frozen, _ = sve_jax.decompose(other)
  with pytest.raises(export.CheckpointError, match='different frozen factors'):
    export.load_trainables(path, other_frozen)


def test_a_file_is_checked_leaf_for_leaf_against_a_runs_trainables(tmp_path, tiny):
  import sve_jax
  _, params, _ = tiny
  frozen, s = sve_jax.decompose(params)
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 2)
  path = export.save_trainables(str(tmp_path / 't.safetensors'), trainables, {}, frozen)
  like = jax.eval_shape(lambda: trainables)
  loaded, _ = export.load_trainables(path, frozen, like=like)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.device_get(trainables))
  three = jax.eval_shape(lambda: sve_jax.init_members(jax.random.key(0), frozen, s, 3))
  with pytest.raises(export.CheckpointError,
                     match=r't\.safetensors: trainables do not fit this backbone at .*'
                           r'expected shapes \[\(3,'):
    export.load_trainables(path, frozen, like=three)


@pytest.mark.parametrize('content', [b'', b'not a safetensors file at all'])
def test_an_unreadable_file_is_refused_naming_it(tmp_path, content):
  path = tmp_path / 'trainables.safetensors'
  path.write_bytes(content)
  with pytest.raises(export.CheckpointError,
                     match=f'cannot read trainables file {path}'):
    export.load_trainables(str(path))
