"""Foreign weight files (`sve_jax.models.weights_io`): safetensors, npz and torch pickles read
back as written, and strict key and shape checks that name the file and the key."""
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from sve_jax.models.weights_io import WeightsError
from sve_jax.models.weights_io import check_keys
from sve_jax.models.weights_io import load_state_dict
from sve_jax.models.weights_io import take


@pytest.fixture
def state():
  rng = np.random.default_rng(0)
  return {'encoder.w': rng.normal(size=(3, 4)).astype(np.float32),
          'encoder.b': rng.normal(size=(4,)).astype(np.float32),
          'steps': np.arange(5, dtype=np.int64)}


def assert_same(got, expected):
  assert sorted(got) == sorted(expected)
  for key, value in expected.items():
    assert got[key].dtype == value.dtype, key
    np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_safetensors_and_npz_read_back(state, tmp_path):
  save_file(state, str(tmp_path / 'w.safetensors'))
  np.savez(tmp_path / 'w.npz', **state)
  assert_same(load_state_dict(tmp_path / 'w.safetensors'), state)
  assert_same(load_state_dict(str(tmp_path / 'w.npz')), state)


def test_torch_pickles_read_back_with_floats_as_float32(state, tmp_path):
  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  torch.save(tensors, tmp_path / 'plain.bin')
  assert_same(load_state_dict(tmp_path / 'plain.bin'), state)
  torch.save({'state_dict': tensors, 'epoch': 3}, tmp_path / 'nested.pth')
  assert_same(load_state_dict(tmp_path / 'nested.pth'), state)
  torch.save({'h': torch.tensor([1.5, -2.25], dtype=torch.bfloat16)}, tmp_path / 'bf16.pt')
  got = load_state_dict(tmp_path / 'bf16.pt')['h']
  assert got.dtype == np.float32 and got.tolist() == [1.5, -2.25]
  torch.save([1, 2], tmp_path / 'list.pt')
  with pytest.raises(WeightsError, match=r'list\.pt does not hold a state dict \(got list\)'):
    load_state_dict(tmp_path / 'list.pt')


def test_unreadable_files_are_named(tmp_path):
  with pytest.raises(WeightsError, match=r'weights file not found: .*absent\.safetensors'):
    load_state_dict(tmp_path / 'absent.safetensors')
  (tmp_path / 'w.onnx').write_bytes(b'')
  with pytest.raises(WeightsError, match=r"unknown weights file format '\.onnx'"):
    load_state_dict(tmp_path / 'w.onnx')
  (tmp_path / 'broken.safetensors').write_bytes(b'\x00' * 20)
  with pytest.raises(WeightsError, match=r'cannot read weights file .*broken\.safetensors'):
    load_state_dict(tmp_path / 'broken.safetensors')


def test_check_keys_names_missing_and_unexpected_keys(state):
  check_keys(state, ['encoder.w', 'encoder.b'], 'w.bin', ignore=['steps'])
  with pytest.raises(WeightsError, match=r"w\.bin: missing keys \['head\.w'\]; unexpected "
                                         r"keys \['steps'\]"):
    check_keys(state, ['encoder.w', 'encoder.b', 'head.w'], 'w.bin')
  many = [f'k{i:02d}' for i in range(11)]
  with pytest.raises(WeightsError, match=r"missing keys \['k00', .*'k07' and 3 more\]"):
    check_keys({}, many, 'w.bin')


def test_take_checks_presence_and_shape(state):
  np.testing.assert_array_equal(take(state, 'encoder.w', (3, 4), 'w.bin'), state['encoder.w'])
  with pytest.raises(WeightsError, match=r"w\.bin: missing key 'head\.w'"):
    take(state, 'head.w', (4,), 'w.bin')
  with pytest.raises(WeightsError, match=r"key 'encoder\.w' has shape \(3, 4\), expected "
                                         r"\(4, 3\) \(does config\.json match the weights\?\)"):
    take(state, 'encoder.w', (4, 3), 'w.bin', config_name='config.json')
