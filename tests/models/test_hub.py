"""Weights by Hugging Face repo id, read offline from a locally built hub cache."""
import os

import huggingface_hub
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from hub_cache import add_repo
from sve_jax import models
from sve_jax.models import bert
from sve_jax.models import hub
from sve_jax.models import vit
from sve_jax.models.weights_io import WeightsError

MINILM = 'sentence-transformers/all-MiniLM-L6-v2'
DINO = 'timm/vit_small_patch16_224.dino'


@pytest.fixture(scope='module')
def hub_cache(tmp_path_factory):
  """A hub cache with the real MiniLM files, a timm DINO ViT-S/16 as timm exports it to the
  hub (random weights), a DINOv2 config.json, and a repo without weights."""
  import timm
  from timm.models._hub import save_for_hf
  tmp = tmp_path_factory.mktemp('hub')
  cache = tmp / 'cache'
  add_repo(cache, MINILM, bert.offline_minilm_path())
  model = timm.create_model('vit_small_patch16_224.dino', pretrained=False)
  save_for_hf(model, str(tmp / 'dino'), safe_serialization=True)
  add_repo(cache, DINO, tmp / 'dino')
  (tmp / 'dinov2').mkdir()
  (tmp / 'dinov2' / 'config.json').write_text(
      '{"architecture": "vit_small_patch14_dinov2", "pretrained_cfg": {"tag": "lvd142m"}}')
  os.symlink(tmp / 'dino' / 'model.safetensors', tmp / 'dinov2' / 'model.safetensors')
  add_repo(cache, 'timm/vit_small_patch14_dinov2.lvd142m', tmp / 'dinov2')
  (tmp / 'no_weights').mkdir()
  (tmp / 'no_weights' / 'config.json').write_text('{"architecture": "vit_small_patch16_224"}')
  add_repo(cache, 'someone/no-weights', tmp / 'no_weights')
  return cache, tmp / 'dino' / 'model.safetensors'


@pytest.fixture
def offline(hub_cache, monkeypatch):
  """HF_HUB_OFFLINE=1 with the cache above. huggingface_hub reads both variables when it is
  imported, so its constants are set too (they are looked up on every call)."""
  cache, _ = hub_cache
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setenv('HF_HUB_CACHE', str(cache))
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
  return hub_cache


def vit_model(path, preset=''):
  return {'name': 'vit', 'path': path, 'preset': preset, 'image_size': 32,
          'dropout_rate': -1., 'dtype': 'float32'}


def test_timm_vit_by_repo_id_infers_the_preset_and_loads_the_repo_weights(offline):
  _, weights_file = offline
  backbone = models.load_backbone(vit_model(f'hf-hub:{DINO}'), num_classes=5)
  expected = vit.PRESETS['vit_small_patch16_224.dino']
  config = backbone.module.config
  assert (config.patch_size, config.width, config.depth, config.num_heads) == (
      expected.patch_size, expected.width, expected.depth, expected.num_heads)
  state = load_file(str(weights_file))
  np.testing.assert_array_equal(backbone.params['blocks_3']['attn']['qkv']['kernel'],
                                state['blocks.3.attn.qkv.weight'].T)
  np.testing.assert_array_equal(backbone.params['cls_token'], state['cls_token'])
  # The configured alias of the same model agrees; another model's does not.
  assert models.load_backbone(vit_model(f'hf-hub:{DINO}', 'dino_vits16'), 5).module.config \
      == config
  with pytest.raises(ValueError, match=r"preset='dino_vits16', but hf-hub:timm/vit_small_"
                                       r"patch14_dinov2.lvd142m holds 'vit_small_patch14_"
                                       r"dinov2.lvd142m'"):
    models.load_backbone(vit_model('timm/vit_small_patch14_dinov2.lvd142m', 'dino_vits16'), 5)


def test_bert_by_bare_repo_id_equals_the_local_folder(offline):
  spec = {'name': 'bert', 'pooling': '', 'max_length': 16, 'dropout_rate': -1.,
          'dtype': 'float32'}
  by_name = models.load_backbone({**spec, 'path': MINILM}, num_classes=3)
  local = models.load_backbone({**spec, 'path': bert.offline_minilm_path()}, num_classes=3)
  assert by_name.module == local.module and by_name.module.pooling == 'mean'
  jax.tree.map(np.testing.assert_array_equal, by_name.params, local.params)
  texts = ['the hub cache works offline']
  np.testing.assert_array_equal(by_name.tokenize(texts)['input_ids'],
                                local.tokenize(texts)['input_ids'])


def test_missing_repo_and_repo_without_weights_name_the_repo_and_what_was_looked_for(offline):
  with pytest.raises(WeightsError, match=r"hf-hub:timm/no_such_vit: cannot find the repo "
                                            r"in the Hugging Face cache .*HF_HUB_OFFLINE=1.*"
                                            r"'model.safetensors', 'pytorch_model.bin'"):
    models.load_backbone(vit_model('hf-hub:timm/no_such_vit'), num_classes=2)
  with pytest.raises(WeightsError, match=r"hf-hub:someone/no-weights: no usable weights "
                                            r"file .*looked for one of \['model.safetensors', "
                                            r"'pytorch_model.bin'\]; the snapshot .* holds "
                                            r"\['config.json'\]"):
    models.load_backbone(vit_model('someone/no-weights'), num_classes=2)


def test_a_local_path_wins_over_a_bare_repo_id(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert hub.repo_id('org/model') == 'org/model'
  (tmp_path / 'org' / 'model').mkdir(parents=True)
  assert hub.repo_id('org/model') is None
  assert hub.repo_id('hf-hub:org/model') == 'org/model'
  for local in ('/abs/path', './rel', 'a/b/c.safetensors', 'weights.npz'):
    assert hub.repo_id(local) is None, local
  with pytest.raises(FileNotFoundError, match=r"'/abs/path' does not exist, and is not a "
                                              'Hugging Face repo id'):
    models.validate_model_config(vit_model('/abs/path'))
