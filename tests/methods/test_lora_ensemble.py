"""LoRA-Ensemble: per-member low-rank adapters on the attention matrices."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sve_jax import layout
from sve_jax import methods
from sve_jax import tree
from sve_jax import models
from sve_jax.models import vit
# pytest finds the fixtures tiny and built by these names.
from tiny_methods import M, built, eval_logits, member_of, method_config, tiny, with_head


def test_lora_members_start_as_the_backbone_and_add_a_b_to_w(tiny, built):
  backbone, images, _ = tiny
  setup = built('lora_ensemble')
  assert not any(np.any(x) for x in jax.tree_util.tree_leaves(setup.trainables['lora_b']))
  # Members 0 and 2 keep B = 0; member 1 gets B = 1 on the DenseGeneral query kernel.
  trainables = jax.tree_util.tree_map(lambda x: x, setup.trainables)
  trainables['lora_b']['attention']['query']['kernel'] = jnp.zeros((M, 2, 8)).at[1].set(1.)
  logits = eval_logits(setup, trainables, images)
  apply = jax.jit(backbone.apply)
  for m in (0, 2):
    head = member_of(setup.trainables['head'], m)
    np.testing.assert_allclose(logits[m], apply(with_head(backbone.params, head), images),
                               rtol=1e-5, atol=1e-6)
  a = np.asarray(trainables['lora_a']['attention']['query']['kernel'][1])  # (d_in 8, r 2)
  w = np.asarray(backbone.params['attention']['query']['kernel'])  # (embed, heads, head_dim)
  params = with_head(backbone.params, member_of(setup.trainables['head'], 1))
  params['attention'] = {**params['attention'], 'query': {
      **params['attention']['query'], 'kernel': w + (a @ np.ones((2, 8))).reshape(w.shape)}}
  np.testing.assert_allclose(logits[1], apply(params, images), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # over 5 s on 2 cores
def test_lora_adapts_exactly_the_bert_attention_matrices_with_gain_10_xavier_a(
    tiny_bert_folder):
  model = {'name': 'bert', 'path': tiny_bert_folder, 'pooling': '', 'max_length': 8}
  backbone = models.load_backbone(model, num_classes=2)
  setup = methods.build('lora_ensemble', backbone, method_config(num_members=2, lora_rank=8),
                        jax.random.key(0))
  a = tree.flatten_paths(setup.trainables['lora_a'])
  b = tree.flatten_paths(setup.trainables['lora_b'])
  expected = {('encoder', f'layer_{i}', 'attention', name, 'kernel')
              for i in range(2) for name in ('query', 'key', 'value', 'output')}
  assert set(a) == set(b) == expected
  assert set(setup.trainables) == {'lora_a', 'lora_b', 'head'}
  assert all(x.shape == (2, 32, 8) for x in a.values())
  assert all(x.shape == (2, 8, 32) and not np.any(x) for x in b.values())
  values = np.concatenate([np.asarray(x).ravel() for x in a.values()])  # 4096 draws
  variance = 10. ** 2 * 2 / (32 + 8)  # gain² · 2 / (fan_in + fan_out)
  assert np.var(values) == pytest.approx(variance, rel=0.06)
  bound = np.sqrt(3 * variance)  # Xavier-uniform: U(-gain·sqrt(6 / (fan_in + fan_out)), +...)
  assert np.abs(values).max() <= bound and np.abs(values).max() > 0.98 * bound
  assert abs(values.mean()) < 0.1
  first = next(iter(a.values()))
  assert not np.allclose(first[0], first[1])  # each member its own draw
  # Per member: 8 matrices × (32·8 + 8·32) plus a 32·2 + 2 head.
  assert setup.trainable_per_member == 8 * 2 * 32 * 8 + 66


def test_vit_attention_rules_select_qkv_and_proj_only():
  config = vit.ViTConfig(patch_size=4, width=16, depth=2, num_heads=2, img_size=8,
                         num_classes=3)
  shapes = jax.eval_shape(vit.ViT(config).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))['params']
  kernels, members = layout.select(shapes, vit.ATTENTION_RULES)
  assert set(kernels) == {(f'blocks_{i}', 'attn', name, 'kernel')
                          for i in range(2) for name in ('qkv', 'proj')}
  assert {'/'.join(p) for p in members} == {
      f'blocks_{i}/attn/{name}/bias' for i in range(2) for name in ('qkv', 'proj')} | {
          'head/kernel', 'head/bias'}


def test_lora_on_a_backbone_without_attention_raises(tiny):
  backbone = dataclasses.replace(tiny[0], name='efficientnet_lite0', attention_rules=None)
  with pytest.raises(ValueError, match='no attention'):
    methods.build('lora_ensemble', backbone, method_config(), jax.random.key(0))
