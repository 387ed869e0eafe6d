"""Adapting only the top K blocks (`config.model.adapted_blocks`, `models.adapt_top_blocks`).

The reference for K < L is independent of the split: the original, unsplit backbone run once
per member in a Python loop, with each top-block kernel rebuilt as ``U diag(max(s_m, 0)) Vᵀ``
from NumPy's own SVD of the pretrained kernel, and the trunk left as it was loaded.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sve_jax import methods
from sve_jax import models
from sve_jax import tree as tree_lib
from sve_jax.models import bert
from sve_jax.models import llama
from sve_jax.models import vit
from sve_jax.models.backbone import adapt_top_blocks
from sve_jax.models.backbone import Backbone
from sve_jax.models.backbone import freeze_lower_blocks
from sve_jax.models.backbone import TRUNK_STATE

NUM_BLOCKS = 4
VERBALIZER = (' negative', ' neutral', ' positive')


def _bert_backbone():
  config = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=NUM_BLOCKS,
                           num_attention_heads=2, intermediate_size=32,
                           max_position_embeddings=16)
  module = bert.BertClassifier(config, num_classes=3, dropout_rate=0.)
  inputs = {'input_ids': jax.random.randint(jax.random.key(0), (5, 7), 0, 50),
            'attention_mask': jnp.array([[1] * 7, [1] * 5 + [0] * 2] * 2 + [[1] * 3 + [0] * 4])}
  params = module.init(jax.random.key(1), inputs)['params']
  return Backbone('bert', module, params, bert.SVE_RULES, 'text', num_blocks=NUM_BLOCKS,
                  attention_rules=bert.ATTENTION_RULES,
                  keep_top_blocks=freeze_lower_blocks(bert.BLOCK_PATTERN)), inputs


def _vit_backbone():
  config = vit.ViTConfig(patch_size=4, width=16, depth=NUM_BLOCKS, num_heads=2, img_size=8,
                         num_classes=3, layer_scale_init=0.5)
  module = vit.ViT(config)
  images = jax.random.normal(jax.random.key(0), (5, 8, 8, 3))
  params = module.init(jax.random.key(1), images)['params']
  return Backbone('vit', module, params, vit.SVE_RULES, 'image', num_blocks=NUM_BLOCKS,
                  attention_rules=vit.ATTENTION_RULES,
                  keep_top_blocks=freeze_lower_blocks(vit.BLOCK_PATTERN)), images


def _llama_backbone(gguf):
  spec = {'name': 'llama', 'path': gguf, 'prompt': 'Tweet: {text}\nSentiment:',
          'verbalizer': VERBALIZER, 'max_length': 16, 'dtype': 'float32'}
  backbone = models.load_backbone(spec, num_classes=3)
  return backbone, backbone.tokenize(['i love it', 'meh', 'the worst of all days', 'ok'])


def _with_random_head(backbone):
  """A random head, so that logits depend on what the blocks compute."""
  if 'head' not in backbone.params:
    return backbone
  head = backbone.params['head']
  kernel = jax.random.normal(jax.random.key(7), head['kernel'].shape)
  params = {**backbone.params, 'head': {'kernel': kernel, 'bias': head['bias']}}
  return Backbone(**{**backbone.__dict__, 'params': params})


@pytest.fixture(scope='module', params=['bert', 'vit', 'llama'])
def family(request, tiny_llm_gguf):
  if request.param == 'bert':
    backbone, inputs = _bert_backbone()
  elif request.param == 'vit':
    backbone, inputs = _vit_backbone()
  else:
    backbone, inputs = _llama_backbone(tiny_llm_gguf)
  return _with_random_head(backbone), inputs


def _reference_member_params(original, trainables_m, num_blocks, adapted):
  """Member params for the *unsplit* backbone, built with NumPy's SVD of each kernel.

  A trainables leaf of a per-block backbone sits at the original path; one of the scanned
  decoder (``layers/...``, K slices) covers the original stack's last K slices.
  """
  flat = tree_lib.flatten_paths(original)
  first = num_blocks - adapted
  out = dict(flat)
  for path, value in tree_lib.flatten_paths(trainables_m).items():
    pretrained = np.asarray(flat[path])
    stacked = path[0] == 'layers'  # the decoder's scan: (L, ...) in the original
    slices = range(first, num_blocks) if stacked else [None]
    built = []
    for i, index in enumerate(slices):
      w = pretrained if index is None else pretrained[index]
      v = value if index is None else value[i]
      if np.ndim(v) < np.ndim(w):  # singular values of a decomposed kernel
        u, _, vt = np.linalg.svd(w, full_matrices=False)
        built.append(jnp.asarray(u) @ (jnp.maximum(v, 0.)[:, None] * jnp.asarray(vt)))
      else:
        built.append(v)
    if stacked:
      out[path] = jnp.concatenate([jnp.asarray(pretrained[:first]), jnp.stack(built)])
    else:
      out[path] = built[0]
  return tree_lib.nest(out)


def _loss(member_logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(
      member_logits, jnp.broadcast_to(labels, member_logits.shape[:2])).mean()


@pytest.mark.slow  # builds and differentiates three backbones twice
@pytest.mark.parametrize('method', ['sve', 'single_svf'])
def test_top_blocks_match_the_full_model_run_per_member(family, method):
  backbone, inputs = family
  adapted = 1
  top = adapt_top_blocks(backbone, adapted)
  setup = methods.build(method, top, {'num_members': 3, 'noise_std': 0.3,
                                      'execution': 'auto', 'head_init_std': 0.5},
                        jax.random.key(0))
  blocks = {part for p in tree_lib.flatten_paths(setup.trainables) for part in p
            if part.startswith(('layer_', 'blocks_', 'trunk_layers'))}
  assert blocks <= {f'layer_{NUM_BLOCKS - 1}', f'blocks_{NUM_BLOCKS - 1}'}, blocks
  labels = jnp.arange(jax.tree_util.tree_leaves(inputs)[0].shape[0]) % 3

  def sve_loss(trainables):
    logits = setup.forward(setup.frozen, trainables, inputs, jax.random.key(0), False)
    return _loss(logits, labels), logits

  def reference_loss(trainables):
    members = jax.tree_util.tree_leaves(trainables)[0].shape[0]
    logits = jnp.stack([
        backbone.apply(_reference_member_params(
            backbone.params, jax.tree_util.tree_map(lambda x: x[m], trainables),
            NUM_BLOCKS if backbone.name != 'llama' else backbone.num_blocks, adapted), inputs)
        for m in range(members)])
    return _loss(logits, labels), logits

  (loss, logits), grads = jax.value_and_grad(sve_loss, has_aux=True)(setup.trainables)
  (ref_loss, ref_logits), ref_grads = jax.value_and_grad(reference_loss, has_aux=True)(
      setup.trainables)
  np.testing.assert_allclose(logits, ref_logits, rtol=2e-4, atol=2e-5)
  assert abs(loss - ref_loss) < 1e-5
  for path, grad in tree_lib.flatten_paths(grads).items():
    ref = tree_lib.flatten_paths(ref_grads)[path]
    assert np.abs(np.asarray(ref)).max() > 0, path  # every adapted leaf reaches the loss
    np.testing.assert_allclose(grad, ref, rtol=2e-3, atol=2e-6, err_msg=str(path))


def test_all_blocks_is_the_backbone_itself(family):
  backbone, _ = family
  assert adapt_top_blocks(backbone, -1) is backbone
  assert adapt_top_blocks(backbone, backbone.num_blocks) is backbone


def _flops(fn, *args):
  return jax.jit(fn).lower(*args).compile().cost_analysis()['flops']


def test_the_trunk_runs_once_per_batch_not_once_per_member():
  """FLOPs of the compiled ensemble forward are ``trunk + M · top``: the part that does not
  grow with M is the trunk, about (L - K) / L of one plain forward; with K = L it is only the
  embeddings and attention masks."""
  backbone, inputs = _bert_backbone()
  plain = _flops(backbone.apply, backbone.params, inputs)

  def intercept(adapted):
    top = adapt_top_blocks(backbone, adapted)
    flops = []
    for members in (1, 2):
      setup = methods.build('sve', top, {'num_members': members, 'execution': 'compose'},
                            jax.random.key(0))
      flops.append(_flops(lambda t: setup.forward(setup.frozen, t, inputs, jax.random.key(0),
                                                  False), setup.trainables))
    return flops[0] - (flops[1] - flops[0])  # f(1) - slope

  trunk_blocks = NUM_BLOCKS - 1
  shared = intercept(1)
  assert 0.8 * plain * trunk_blocks / NUM_BLOCKS < shared < 1.1 * plain
  assert intercept(NUM_BLOCKS) < 0.1 * plain


@pytest.mark.parametrize('adapted', [0, -2, NUM_BLOCKS + 1])
def test_a_bad_number_of_blocks_is_refused_in_one_line(adapted):
  backbone, _ = _bert_backbone()
  with pytest.raises(ValueError, match=r'^config.model.adapted_blocks=.*[^\n]$'):
    adapt_top_blocks(backbone, adapted)


def test_a_backbone_without_a_block_stack_is_refused():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(2, name='head')(nn.Conv(4, (3, 3))(x).mean((1, 2)))

  x = jnp.ones((1, 8, 8, 3))
  backbone = Backbone('efficientnet_lite0', Net(), Net().init(jax.random.key(0), x)['params'],
                      (), 'image')
  with pytest.raises(ValueError, match='has no stack of transformer blocks'):
    adapt_top_blocks(backbone, 2)


def test_the_decoder_scan_splits_without_changing_the_model(tiny_llm_gguf):
  backbone, inputs = _llama_backbone(tiny_llm_gguf)
  top = adapt_top_blocks(backbone, 1)
  assert top.params['trunk_layers']['mlp']['up']['kernel'].shape[0] == backbone.num_blocks - 1
  assert top.params['layers']['mlp']['up']['kernel'].shape[0] == 1
  np.testing.assert_allclose(top.apply(top.params, inputs),
                             backbone.apply(backbone.params, inputs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('method', ['lora_ensemble', 'batch_ensemble'])
def test_baselines_adapt_only_the_top_blocks_too(method):
  backbone, _ = _bert_backbone()
  setup = methods.build(method, adapt_top_blocks(backbone, 2), {'num_members': 2},
                        jax.random.key(0))
  layers = {part for p in tree_lib.flatten_paths(setup.trainables) for part in p
            if part.startswith('layer_')}
  assert layers == {f'layer_{i}' for i in range(NUM_BLOCKS - 2, NUM_BLOCKS)}


@pytest.mark.parametrize('method', ['single_ft', 'deep_ensemble', 'mc_dropout'])
def test_methods_that_train_every_weight_refuse_top_blocks(method):
  with pytest.raises(ValueError, match=f'{method} trains every weight'):
    methods.get(method).check_adapted_blocks(2)
  methods.get(method).check_adapted_blocks(-1)


@pytest.mark.parametrize('adapted', [-1, 2])
def test_the_top_on_the_trunks_output_is_the_whole_forward(family, adapted):
  """What the trunk cache trains on: ``top(trunk(x))`` is ``__call__(x)``; with every block
  adapted the trunk is the embeddings."""
  backbone, inputs = family
  top = adapt_top_blocks(backbone, adapted)
  state = jax.jit(top.apply_trunk)(top.params, inputs)
  np.testing.assert_allclose(top.apply(top.params, {TRUNK_STATE: state}),
                             backbone.apply(backbone.params, inputs), rtol=1e-5, atol=1e-6)
