"""Backbones by name (`sve_jax.models`): the config checks that run before any weights load."""
import pytest

from sve_jax import models


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
    ({'name': 'llama', 'verbalizer': (), 'prompt': '{text}'}, ValueError,
     r'config\.model\.verbalizer=\(\) must be a tuple of label words'),
    ({'name': 'llama', 'verbalizer': (' a', ' b'), 'prompt': 'no slot'}, ValueError,
     r"config\.model\.prompt='no slot' must contain \{text\}"),
])
def test_a_bad_model_section_is_named_before_loading(fields, error, message):
  with pytest.raises(error, match=message):
    models.validate_model_config(model(**fields))
