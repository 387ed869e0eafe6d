"""Methods on a decoder that classifies by prompt with its LM's own head: no fresh head, so
every member shares the pretrained one, and every method's members start as the pretrained LM."""
import jax
import numpy as np
import pytest

from sve_jax import methods
from sve_jax import models

VERBALIZER = (' negative', ' neutral', ' positive')


@pytest.fixture(scope='module')
def backbone(tiny_llm_gguf):
  spec = {'name': 'llama', 'path': tiny_llm_gguf, 'prompt': 'Tweet: {text}\nSentiment:',
          'verbalizer': VERBALIZER, 'max_length': 16, 'dtype': 'float32'}
  return models.load_backbone(spec, num_classes=3)


@pytest.mark.parametrize('method', ['sve', 'single_svf', 'lora_ensemble', 'batch_ensemble',
                                    'single_ft', 'deep_ensemble'])
@pytest.mark.slow  # over 5 s on 2 cores
def test_methods_without_a_fresh_head_start_as_the_pretrained_lm(backbone, method):
  config = {'num_members': 2, 'noise_std': 0., 'execution': 'auto', 'lora_rank': 2,
            'head_init_std': 0.01}
  setup = methods.build(method, backbone, config, jax.random.key(0))
  assert 'head' not in setup.trainables  # every member shares the LM head
  inputs = backbone.tokenize(['i love it', 'meh', 'the worst'])
  expected = np.asarray(backbone.apply(backbone.params, inputs))
  logits = np.asarray(jax.jit(lambda t: setup.forward(setup.frozen, t, inputs, jax.random.key(1),
                                                      False))(setup.trainables))
  assert logits.shape == (methods.get(method).reported_members(2), 3, 3)
  for member in logits:  # zero noise, B = 0, r = s = 1, full copies: the backbone itself
    np.testing.assert_allclose(member, expected, atol=2e-4)


def test_mc_dropout_is_refused_on_a_decoder_without_dropout(backbone):
  with pytest.raises(ValueError, match='mc_dropout needs dropout'):
    methods.build('mc_dropout', backbone, {'num_members': 2}, jax.random.key(0))

