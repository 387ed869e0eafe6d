"""MC dropout: one fine-tuned model, M dropout samples at evaluation."""

import jax
import numpy as np
import pytest

from sve_jax import methods
from sve_jax import models
from sve_jax.train import steps
# pytest finds the fixtures tiny by these names.
from tiny_methods import B, C, member_of, method_config, tiny, tiny_backbone


def test_mc_dropout_samples_differ_and_are_reproducible(tiny):
  backbone, images, _ = tiny
  setup = methods.build('mc_dropout', backbone, method_config(num_members=4), jax.random.key(2))
  eval_fn = jax.jit(steps.make_eval_step(setup.forward))
  a = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(7)))
  again = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(7)))
  other = np.asarray(eval_fn(setup.trainables, setup.frozen, images, jax.random.key(8)))
  assert a.shape == (4, B, C)
  np.testing.assert_array_equal(a, again)
  assert not np.allclose(a, other)
  assert all(not np.allclose(a[i], a[j]) for i in range(4) for j in range(i))
  # Every sample is the trained model with dropout on: its mean is near the deterministic one.
  deterministic = jax.jit(backbone.apply)(member_of(setup.trainables, 0), images)
  assert np.abs(a.mean(0) - deterministic).max() < np.abs(a - deterministic).max()


def test_mc_dropout_without_dropout_names_the_config_key(tiny):
  with pytest.raises(ValueError, match='config.model.dropout_rate'):
    methods.build('mc_dropout', tiny_backbone(dropout_rate=0.), method_config(), jax.random.key(0))


def test_config_dropout_rate_reaches_the_bert_backbone(tiny_bert_folder):
  model = {'name': 'bert', 'path': tiny_bert_folder, 'pooling': '', 'max_length': 8,
           'dropout_rate': 0.}
  backbone = models.load_backbone(model, num_classes=2)
  assert backbone.dropout_rate == 0.
  assert backbone.module.dropout_rate == backbone.module.attention_dropout_rate == 0.
  with pytest.raises(ValueError, match='config.model.dropout_rate'):
    methods.build('mc_dropout', backbone, method_config(), jax.random.key(0))
  own = models.load_backbone({**model, 'dropout_rate': -1.}, num_classes=2)
  assert own.dropout_rate == 0.1  # transformers' BertConfig default, saved in config.json
  with pytest.raises(ValueError, match=r'config.model.dropout_rate=1.5 must be'):
    models.validate_model_config({**model, 'dropout_rate': 1.5})
