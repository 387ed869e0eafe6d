"""Every config builds its input pipeline, trains a step and reports, on stand-in data.

The paper settings read tfds catalog data and hub checkpoints users download themselves;
here they run on `tfds.testing.mock_data` stand-ins with the real features and on randomly
initialised checkpoints in the same (timm / HF) format. The offline ViT configs' packaged ONNX
files (tests/models/test_onnx_vit.py checks them) give way to random timm checkpoints of
their presets in the same way.
"""
import dataclasses
import importlib
import json
import os

import pytest

from sve_jax.models import vit
import train

pytestmark = pytest.mark.e2e

CONFIGS = ['default', 'cifar100_dino_vits16', 'flowers102_dino_vits16', 'dtd_dino_vits16',
           'pets_dinov2_vits14', 'sst2_bert_base', 'fmnist_efficientnet_lite0', 'smollm2_tweets',
           'smollm2_tweets_long', 'gemma3_tweets', 'fmnist_dinov2_vits14', 'fmnist_clip_vitb16']


#: Blocks of the stand-in ViTs. The configs' pipelines, SVE rules and reports are what this
#: file checks; the full 12-block numerics are tests/models/test_vit.py's (against timm), and
#: 12 blocks would triple the compile time of every ViT config here.
STAND_IN_DEPTH = 2


@pytest.fixture(scope='module')
def timm_checkpoints(tmp_path_factory):
  """Random-init timm checkpoints of :data:`STAND_IN_DEPTH` blocks, in the format of the
  presets the paper configs name."""
  import timm
  import torch
  from safetensors.torch import save_file
  folder = tmp_path_factory.mktemp('timm')
  paths = {}
  for preset, timm_name in (('dino_vits16', 'vit_small_patch16_224.dino'),
                            ('dinov2_vits14', 'vit_small_patch14_dinov2.lvd142m'),
                            ('clip_vitb16', 'vit_base_patch16_clip_quickgelu_224.openai')):
    torch.manual_seed(0)
    model = timm.create_model(timm_name, pretrained=False, depth=STAND_IN_DEPTH)
    paths[preset] = str(folder / f'{preset}.safetensors')
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, paths[preset])
  return paths


@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains_one_step_and_reports(name, tmp_path, monkeypatch, shared_data_dir,
                                            tiny_bert_folder, timm_checkpoints,
                                            efficientnet_cache, tiny_llm_gguf):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert config.method == 'sve' and config.num_members >= 1
  assert 'python train.py --config=configs/' in importlib.import_module(
      f'configs.{name}').__doc__
  config.data.data_dir = shared_data_dir
  if config.model.name == 'vit':
    config.model.path = timm_checkpoints[config.model.preset]
    preset = vit.PRESET_ALIASES[config.model.preset]
    monkeypatch.setitem(vit.PRESETS, preset,
                        dataclasses.replace(vit.PRESETS[preset], depth=STAND_IN_DEPTH))
    config.model.image_size = 2 * (14 if 'v2' in config.model.preset else 16)
  elif config.model.name == 'bert':
    config.model.path = tiny_bert_folder
    config.model.max_length = 16
  elif config.model.name == 'llama':
    config.model.path = tiny_llm_gguf
    config.model.max_length = 16
  else:
    config.model.path = efficientnet_cache
    config.model.image_size = 32
  if config.data.name not in ('tweet_sentiment', 'fashion_mnist_local'):
    config.data.mock_examples = 8
    if config.ood.name:
      config.ood.mock_examples = 8
  if config.model.adapted_blocks != -1:  # the stand-ins have 2 blocks: adapt the top one
    config.model.adapted_blocks = 1
  config.data.max_train_examples = 8
  config.data.max_eval_examples = 8
  config.num_members = 2
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_epochs = 1
  config.max_steps = 1
  workdir = str(tmp_path / name)
  results = train.run(config, workdir, 'train')
  assert results['num_members'] == 2
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['params']['overhead'] > 0
  assert ('ood' in results) == bool(config.ood.name)
