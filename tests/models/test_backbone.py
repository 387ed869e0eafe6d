"""What every backbone loader returns (`sve_jax.models.backbone`)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax.models.backbone import Backbone
from sve_jax.models.backbone import HEAD_INIT
from sve_jax.models.backbone import dropout_override
from sve_jax.models.backbone import square_image_size


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dropout(0.5, deterministic=not train)(nn.Dense(8)(x))
    return nn.Dense(2, kernel_init=HEAD_INIT, name='head')(x)


def test_dropout_override_and_image_size():
  assert dropout_override({}) is None and dropout_override({'dropout_rate': -1.}) is None
  assert dropout_override({'dropout_rate': 0}) == 0. and dropout_override({'dropout_rate': .2}) == .2
  assert square_image_size({'image_size': 96}) == (96, 96)


def test_apply_is_the_modules_forward_with_train_and_rngs():
  module = Tiny()
  x = jnp.ones((3, 4))
  params = module.init(jax.random.key(0), x)['params']
  backbone = Backbone('tiny', module, params, rules=(), modality='text')
  np.testing.assert_array_equal(backbone.apply(params, x), np.zeros((3, 2)))  # head at zero
  params = {**params, 'head': {'kernel': jnp.ones((8, 2)), 'bias': jnp.zeros(2)}}
  evaluated = backbone.apply(params, x)
  np.testing.assert_allclose(evaluated, module.apply({'params': params}, x), rtol=1e-6)
  trained = [backbone.apply(params, x, train=True, rngs={'dropout': jax.random.key(k)})
             for k in (1, 2)]
  assert not np.allclose(trained[0], trained[1])  # dropout masks follow the key


# --------------------------------------------------------------------------------------------
# apply_with_features: the pooled features each backbone family's head reads.
# --------------------------------------------------------------------------------------------


def _random_params(module, inputs, seed=0):
  """Initial params with a random head (a zero head would hide what it reads)."""
  params = jax.jit(module.init)(jax.random.key(seed), inputs)['params']
  if 'head' in params:
    kernel = params['head']['kernel']
    params = {**params, 'head': {'kernel': jax.random.normal(jax.random.key(seed + 1),
                                                             kernel.shape),
                                 'bias': jnp.linspace(-1., 1., kernel.shape[-1])}}
  return params


def _tiny_family(name):
  """``(module, params, inputs, head_of)``: a small random backbone of one family, and
  ``head_of(params, features) -> logits``, its head applied to its features."""
  dense_head = lambda p, f: f @ p['head']['kernel'] + p['head']['bias']
  if name == 'bert':
    from sve_jax.models import bert
    module = bert.BertClassifier(bert.BertConfig(50, 16, 1, 2, 32, max_position_embeddings=8),
                                 num_classes=3, pooling='mean')
    inputs = {'input_ids': jnp.array([[2, 7, 9, 0], [3, 4, 0, 0]]),
              'attention_mask': jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])}
    return module, _random_params(module, inputs), inputs, dense_head
  if name == 'vit':
    from sve_jax.models import vit
    module = vit.ViT(vit.ViTConfig(patch_size=4, width=16, depth=1, num_heads=2, img_size=8,
                                   num_classes=3))
    images = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    return module, _random_params(module, images), images, dense_head
  if name == 'efficientnet_lite0':
    from sve_jax.models import efficientnet_lite
    module = efficientnet_lite.EfficientNetLite0(num_classes=3)
    images = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    return module, _random_params(module, images), images, dense_head
  from sve_jax.models import llama
  config = llama.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=48, tie_word_embeddings=True)
  labels = (5, 17, 40)
  module = llama.LlamaDecoder(config, label_token_ids=labels)
  inputs = {'input_ids': jnp.array([[3, 9, 11, 4], [8, 2, 0, 0]]),
            'attention_mask': jnp.array([[1, 1, 1, 1], [1, 1, 0, 0]])}
  # The LM head tied to the embeddings, restricted to the label tokens.
  lm_head = lambda p, f: f @ p['embed_tokens']['embedding'][np.asarray(labels)].T
  return module, _random_params(module, inputs), inputs, lm_head


@pytest.mark.slow  # 5-10 s each on 2 cores (EfficientNet's 16 blocks: 40 s)
@pytest.mark.parametrize('name', ['bert', 'vit', 'llama', 'efficientnet_lite0'])
def test_apply_with_features_returns_the_logits_and_what_the_head_reads(name):
  module, params, inputs, head_of = _tiny_family(name)
  backbone = Backbone(name, module, params, rules=(), modality='text')
  plain, (logits, features) = jax.jit(
      lambda p, x: (backbone.apply(p, x), backbone.apply_with_features(p, x)))(params, inputs)
  np.testing.assert_allclose(logits, plain, rtol=1e-5, atol=1e-6)
  assert features.shape[0] == 2 and features.ndim == 2
  # The features are the head's input: the head applied to them gives the logits.
  np.testing.assert_allclose(head_of(params, features), logits, rtol=1e-4, atol=1e-5)


def test_apply_with_features_names_a_module_that_sows_none():
  module = Tiny()
  params = module.init(jax.random.key(0), jnp.ones((3, 4)))['params']
  with pytest.raises(ValueError, match='tiny backbone module sows no pooled features'):
    Backbone('tiny', module, params, rules=(), modality='text').apply_with_features(
        params, jnp.ones((3, 4)))
