"""Reading foreign weight files into flat ``{name: np.ndarray}`` state dicts.

Foreign weights are the pretrained backbones' checkpoints as other libraries write them (Hugging
Face, timm, torch). One place for every backbone loader: file formats (safetensors, npz,
torch pickles), strict key accounting and shape checks. A loader either gets every key it
expects with the shape it expects, or raises :class:`WeightsError` naming the file and the
key; a partially loaded model is never returned.

The run's own checkpoints (the orbax train state, the trainables file) are
:mod:`sve_jax.train.checkpoint` and :mod:`sve_jax.export`; their error is
:class:`sve_jax.export.CheckpointError`.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Mapping

import numpy as np


class WeightsError(ValueError):
  """A foreign weights file (a pretrained backbone's checkpoint, its config or tokenizer) is
  missing, unreadable, or does not hold what its loader expects."""


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a weights file into a flat dict of numpy arrays.

  Args:
    path: a ``.safetensors`` or ``.npz`` file (read without torch), or a torch pickle
      (``.bin``, ``.pt``, ``.pth``; needs torch installed).

  Returns:
    ``{key: array}`` with the file's own key names, float tensors as stored (bf16 becomes f32).

  Raises:
    WeightsError: the file is missing, has an unknown suffix or cannot be parsed.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsError(f'weights file not found: {path}')
  suffix = os.path.splitext(path)[1].lower()
  try:
    if suffix == '.safetensors':
      return _load_safetensors(path)
    if suffix == '.npz':
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
    if suffix in ('.bin', '.pt', '.pth'):
      return _load_torch_pickle(path)
  except WeightsError:
    raise
  except Exception as e:  # Parsers raise many types; name the file in one.
    raise WeightsError(f'cannot read weights file {path}: {type(e).__name__}: {e}') from e
  raise WeightsError(
      f'unknown weights file format {suffix!r} for {path}; expected .safetensors, .npz, '
      '.bin, .pt or .pth')


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  """A safetensors file as numpy; bfloat16 tensors (which numpy lacks) become float32."""
  with open(path, 'rb') as f:
    header = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
  if not any(isinstance(v, Mapping) and v.get('dtype') == 'BF16' for v in header.values()):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return dict(load_file(path))
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  state = {}
  with safe_open(path, framework='flax') as f:  # jax reads bfloat16
    for key in f.keys():
      state[key] = np.asarray(f.get_tensor(key), np.float32)
  return state


def _load_torch_pickle(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise WeightsError(
        f'{path} is a torch pickle and torch is not installed; convert it once to '
        '.safetensors on a machine with torch') from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  if isinstance(state, Mapping) and 'state_dict' in state:
    state = state['state_dict']
  if not isinstance(state, Mapping):
    raise WeightsError(f'{path} does not hold a state dict (got {type(state).__name__})')
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items()}


def check_keys(state: Mapping[str, np.ndarray], expected: Iterable[str], path: str,
               ignore: Iterable[str] = ()) -> None:
  """Raises unless ``state`` has exactly the ``expected`` keys (ignoring ``ignore``).

  Args:
    state: the loaded state dict.
    expected: every key the loader will read.
    path: the file it came from, for the message.
    ignore: keys that may be present and are deliberately unused (e.g. buffers).
  """
  expected = set(expected)
  ignore = set(ignore)
  missing = sorted(expected - set(state))
  unexpected = sorted(set(state) - expected - ignore)
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f'missing keys {_preview(missing)}')
    if unexpected:
      parts.append(f'unexpected keys {_preview(unexpected)}')
    raise WeightsError(f'{path}: ' + '; '.join(parts))


def take(state: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...],
         path: str, config_name: str = 'the model config') -> np.ndarray:
  """Returns ``state[key]`` after checking it exists and has ``shape``.

  ``config_name`` names what the expected shape came from (e.g. ``config.json``).
  """
  if key not in state:
    raise WeightsError(f'{path}: missing key {key!r}')
  value = np.asarray(state[key])
  if tuple(value.shape) != tuple(shape):
    raise WeightsError(
        f'{path}: key {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)} '
        f'(does {config_name} match the weights?)')
  return value


def _preview(keys: list[str], limit: int = 8) -> str:
  shown = ', '.join(repr(k) for k in keys[:limit])
  more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
  return f'[{shown}{more}]'
