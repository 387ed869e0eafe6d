"""ViT backbone vs timm 1.0 (the reference), on random-init 2-block models with real widths.

No ViT weights exist offline, so each test builds the timm architecture with random weights
(norms, biases, layer scales and tokens randomised too, so none is a trivial 1 or 0), saves
its state dict as a timm checkpoint file, loads it with :func:`vit.load_vit` and compares
outputs with timm's forward on the same images.
"""
import dataclasses

import jax
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import checkpoint_filter_fn

import sve_jax
from sve_jax import factorize
from sve_jax import tree
from sve_jax.data import transforms
from sve_jax.models import vit
from sve_jax.models.weights_io import WeightsError

DEPTH = 2
SOURCE_SIZE = 112  # img_size of the saved checkpoints: 7x7 (p16) or 8x8 (p14) patch grids.
ATOL = 1e-4

DINO = 'vit_small_patch16_224.dino'
DINOV2 = 'vit_small_patch14_dinov2.lvd142m'
DINOV2_REG = 'vit_small_patch14_reg4_dinov2.lvd142m'
AUGREG = 'vit_base_patch16_224.augreg_in21k_ft_in1k'


def _timm_vit(name, img_size=SOURCE_SIZE, seed=0, **kwargs):
  """A timm ViT in eval mode with every parameter random and away from its init constant."""
  torch.manual_seed(seed)
  model = timm.create_model(name, pretrained=False, depth=DEPTH, img_size=img_size, **kwargs)
  with torch.no_grad():
    for key, p in model.named_parameters():
      if key.endswith('gamma'):  # layer scale: init 1e-5 would hide the residual branches
        p.copy_(0.5 + 0.2 * torch.randn_like(p))
      elif 'norm' in key and key.endswith('weight'):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif key.endswith('bias') or 'token' in key or key == 'pos_embed':
        p.copy_(0.2 * torch.randn_like(p))
      elif key == 'head.weight':
        p.copy_(0.05 * torch.randn_like(p))
  return model.eval()


def _save(model, path):
  state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
  if str(path).endswith('.npz'):
    np.savez(path, **{k: v.numpy() for k, v in state.items()})
  else:
    save_file(state, str(path))
  return str(path)


def _config(name, **changes):
  return dataclasses.replace(vit.PRESETS[name], **{'depth': DEPTH, 'img_size': SOURCE_SIZE,
                                                   **changes})


def _images(size, seed=0):
  size = (size, size) if isinstance(size, int) else size
  return np.random.default_rng(seed).standard_normal((2, *size, 3)).astype(np.float32)


def _timm_outputs(model, images):
  """timm's (tokens, pre-logits features, output) for NHWC ``images``."""
  with torch.no_grad():
    tokens = model.forward_features(torch.from_numpy(images.transpose(0, 3, 1, 2)))
    features = model.forward_head(tokens, pre_logits=True)
    return tokens.numpy(), features.numpy(), model.head(features).numpy()


def _our_outputs(model, params, images):
  """Our (tokens, features, output), jitted as one program: one compile per architecture."""

  @jax.jit
  def run(params, images):
    variables = {'params': params}
    return (model.apply(variables, images, method='tokens'),
            model.apply(variables, images, method='features'),
            model.apply(variables, images))

  return run(params, images)


def _assert_close(ours, reference):
  for name, a, b in zip(('tokens', 'features', 'output'), ours, reference):
    assert a.shape == b.shape, name
    np.testing.assert_allclose(np.asarray(a), b, rtol=0, atol=ATOL, err_msg=name)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  """``{name: (timm model, checkpoint path)}`` at SOURCE_SIZE; DINOv2 saved as .npz."""
  folder = tmp_path_factory.mktemp('vit')
  out = {}
  for name, suffix, kwargs in ((DINO, 'safetensors', {}), (DINOV2, 'npz', {}),
                               (DINOV2_REG, 'safetensors', {}), (AUGREG, 'safetensors', {}),
                               ('dino_head5', 'safetensors', dict(num_classes=5))):
    model = _timm_vit(DINO if name == 'dino_head5' else name, **kwargs)
    out[name] = model, _save(model, folder / f'{name}.{suffix}')
  return out


# --------------------------------------------------------------------------------------------
# Numerical agreement with timm.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('name', [DINO, DINOV2, DINOV2_REG, AUGREG])
def test_matches_timm_at_checkpoint_size(checkpoints, name):
  reference, path = checkpoints[name]
  model, params = vit.load_vit(path, _config(name))
  images = _images(SOURCE_SIZE)
  _assert_close(_our_outputs(model, params, images), _timm_outputs(reference, images))
  assert model.config.num_classes == (1000 if name == AUGREG else 0)


@pytest.mark.parametrize('name, img_size', [
    (DINO, 160),  # 7x7 -> 10x10, upsampling
    (DINOV2, 70),  # 8x8 -> 5x5, anti-aliased downsampling
    (DINOV2_REG, (56, 98)),  # 8x8 -> 4x7, non-square; table without prefix entries
])
def test_resampled_position_table_matches_timm_loading(checkpoints, name, img_size):
  source, path = checkpoints[name]
  reference = timm.create_model(name, pretrained=False, depth=DEPTH, img_size=img_size).eval()
  reference.load_state_dict(checkpoint_filter_fn(source.state_dict(), reference))
  model, params = vit.load_vit(path, _config(name), img_size=img_size)
  images = _images(img_size, seed=1)
  _assert_close(_our_outputs(model, params, images), _timm_outputs(reference, images))


@pytest.mark.parametrize('name', sorted(vit.PRESETS))
def test_presets_match_timm_pretrained_configs(name):
  config, timm_cfg = vit.PRESETS[name], timm.models.get_pretrained_cfg(name)
  assert config.img_size == tuple(timm_cfg.input_size[1:])
  assert config.num_classes == timm_cfg.num_classes
  assert config.image_mean == tuple(timm_cfg.mean)
  assert config.image_std == tuple(timm_cfg.std)
  pixels = np.random.default_rng(0).integers(0, 256, size=(1, 2, 2, 3), dtype=np.uint8)
  expected = (pixels / 255. - np.array(timm_cfg.mean)) / np.array(timm_cfg.std)
  normalized = transforms.normalize_images(pixels, config.image_mean, config.image_std)
  np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-6)


def test_aliases_name_presets():
  assert set(vit.PRESET_ALIASES.values()) == set(vit.PRESETS)
  for alias, name in vit.PRESET_ALIASES.items():
    assert vit.get_config(alias) is vit.PRESETS[name]


@pytest.mark.parametrize('old, new, prefix', [(7, (10, 10), 1), (8, (5, 5), 1),
                                              (8, (4, 7), 0), (6, (6, 6), 5)])
def test_resample_pos_embed_matches_timm(old, new, prefix):
  table = np.random.default_rng(0).standard_normal((1, prefix + old * old, 16), np.float32)
  expected = resample_abs_pos_embed(torch.from_numpy(table), new_size=list(new),
                                    num_prefix_tokens=prefix, antialias=True).numpy()
  np.testing.assert_allclose(vit.resample_pos_embed(table, new, prefix), expected, atol=1e-5)


def test_average_pooling_matches_timm(tmp_path):
  reference = _timm_vit('vit_small_patch16_224', global_pool='avg', num_classes=5)
  path = _save(reference, tmp_path / 'avg.safetensors')
  model, params = vit.load_vit(path, _config(DINO, pooling='avg', num_classes=5))
  images = _images(SOURCE_SIZE)
  _assert_close(_our_outputs(model, params, images), _timm_outputs(reference, images))


def test_new_head_replaces_checkpoint_head_and_keeps_features(checkpoints):
  reference, path = checkpoints['dino_head5']
  model, params = vit.load_vit(path, _config(DINO, num_classes=5), num_classes=7)
  assert params['head']['kernel'].shape == (384, 7)
  assert not np.any(params['head']['kernel']) and not np.any(params['head']['bias'])
  images = _images(SOURCE_SIZE)
  features = model.apply({'params': params}, images, method='features')
  np.testing.assert_allclose(features, _timm_outputs(reference, images)[1], atol=ATOL)


@pytest.mark.slow  # compiles ViT-S/16 in training and evaluation mode
def test_dropout_only_in_training(checkpoints):
  reference, path = checkpoints[DINO]
  model, params = vit.load_vit(path, _config(DINO, dropout_rate=0.3))
  images = _images(SOURCE_SIZE)
  expected = _timm_outputs(reference, images)[2]
  run = jax.jit(model.apply, static_argnames='train')
  np.testing.assert_allclose(run({'params': params}, images), expected, rtol=0, atol=ATOL)
  train = [run({'params': params}, images, train=True, rngs={'dropout': jax.random.key(k)})
           for k in (0, 1)]
  assert np.abs(train[0] - expected).max() > 1e-2
  assert np.abs(train[0] - train[1]).max() > 1e-2


# --------------------------------------------------------------------------------------------
# Errors name the file and the key.
# --------------------------------------------------------------------------------------------


def _edited(tmp_path, model, edit):
  state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
  edit(state)
  path = str(tmp_path / 'edited.safetensors')
  save_file(state, path)
  return path


@pytest.mark.parametrize('name, config, expected', [
    (DINO, _config(DINO, depth=3), ["no keys 'blocks.2.*'", 'depth 3']),
    (DINO, _config(DINO, depth=1), ["'blocks.1.", 'depth 1']),
    (DINO, _config(AUGREG, num_classes=0), ["'patch_embed.proj.weight'", 'width 768']),
    (DINOV2, _config(DINO), ["'patch_embed.proj.weight'", 'patch size 16x16']),
    (DINOV2_REG, _config(DINOV2), ["'reg_token'", 'expects 0']),
    (DINOV2, _config(DINOV2_REG), ["'reg_token'", 'expects 4']),
    (DINO, _config(DINO, layer_scale_init=1e-5), ['missing keys', "'blocks.0.ls1.gamma'"]),
    (DINO, _config(DINO, mlp_ratio=2.0), ["'blocks.0.mlp.fc1.bias'", 'expected (768,)']),
    (AUGREG, _config(AUGREG, num_classes=0), ["'head.weight'", '1000 outputs']),
])
def test_config_mismatch_names_file_and_key(checkpoints, name, config, expected):
  _, path = checkpoints[name]
  with pytest.raises(WeightsError) as error:
    vit.load_vit(path, config)
  for text in [path] + expected:
    assert text in str(error.value)


def test_missing_and_unexpected_keys_are_named(tmp_path, checkpoints):
  model, _ = checkpoints[DINO]
  missing = _edited(tmp_path, model, lambda s: s.pop('blocks.1.mlp.fc2.bias'))
  with pytest.raises(WeightsError, match=r"missing keys \['blocks\.1\.mlp\.fc2\.bias'\]"):
    vit.load_vit(missing, _config(DINO))
  extra = _edited(tmp_path, model, lambda s: s.update(mask_token=torch.zeros(1, 384)))
  with pytest.raises(WeightsError, match=r"unexpected keys \['mask_token'\]") as error:
    vit.load_vit(extra, _config(DINO))
  assert extra in str(error.value)


def test_missing_file_and_unknown_preset(tmp_path):
  path = str(tmp_path / 'absent.safetensors')
  with pytest.raises(WeightsError, match='not found') as error:
    vit.load_vit(path, DINO)
  assert path in str(error.value)
  with pytest.raises(ValueError, match='unknown ViT preset'):
    vit.load_vit(path, 'vit_huge')


def test_image_size_must_match_config(checkpoints):
  _, path = checkpoints[DINO]
  model, params = vit.load_vit(path, _config(DINO))
  with pytest.raises(ValueError, match=r'img_size \(112, 112\)'):
    model.apply({'params': params}, _images(96))


# --------------------------------------------------------------------------------------------
# SVE on the ViT.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def sve_dino(checkpoints):
  """A 5-class DINO ViT-S/16 with a random head, decomposed with SVE_RULES; 2 noiseless members."""
  reference, path = checkpoints['dino_head5']
  model, params = vit.load_vit(path, _config(DINO, num_classes=5))
  frozen, s = sve_jax.decompose(params, vit.SVE_RULES)
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 2, noise_std=0.0)
  return reference, model, frozen, s, trainables


@pytest.mark.slow  # decomposes every matrix of ViT-S/16 (the sve_dino fixture)
def test_sve_rules_select_block_matrices_biases_and_head(sve_dino):
  _, _, frozen, s, _ = sve_dino
  targets = [f'blocks_{i}/{layer}' for i in range(DEPTH)
             for layer in ('attn/qkv', 'attn/proj', 'mlp/fc1', 'mlp/fc2')]
  assert set(factorize.layouts(frozen)) == {f'{t}/kernel' for t in targets}
  trained = {'/'.join(p) for p in tree.flatten_paths(s)}
  assert trained == ({f'{t}/kernel' for t in targets} | {f'{t}/bias' for t in targets}
                     | {'head/kernel', 'head/bias'})


@pytest.mark.slow  # decomposes every matrix of ViT-S/16 (the sve_dino fixture)
@pytest.mark.parametrize('execution', ['compose', 'factored'])
def test_sve_members_without_noise_reproduce_the_model(sve_dino, execution):
  reference, model, frozen, _, trainables = sve_dino
  sve_apply = sve_jax.make_sve_apply(lambda p, x: model.apply({'params': p}, x), execution)
  images = _images(SOURCE_SIZE)
  members = jax.jit(sve_apply)({'frozen': frozen, 'trainables': trainables}, images)
  expected = _timm_outputs(reference, images)[2]
  assert members.shape == (2, *expected.shape)
  assert np.abs(expected).max() > 0.1  # a random head: the comparison is not 0 == 0
  for member in members:
    np.testing.assert_allclose(member, expected, rtol=0, atol=ATOL)
