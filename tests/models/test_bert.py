"""BERT backbone: parity with HF transformers (torch), loader errors, SVE targets.

References are independent of our code: ``transformers.BertModel`` / ``BertForSequence
Classification`` run in torch on the same folders. The tokenizer's tests are in
``test_tokenizer.py``.
"""
import functools
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

import sve_jax
from sve_jax import models
from sve_jax.models import bert
from sve_jax.models.weights_io import WeightsError
from sve_jax.models.tokenizer import load_tokenizer
from sve_jax.models.tokenizer import tokenize

TOL = 1e-4
MAX_LENGTH = 48

SENTENCES = [
    'The movie was absolutely wonderful.',
    'I did not enjoy the food at all; it was cold and bland.',
    'Hi',
    '',
    'Café crème brûlée à Noël, naïve façade, jalapeño.',
    'Straße, Größe und Übermaß sind deutsche Wörter.',
    'I love pizza 🍕🍕 and sunny days ☀️!',
    '我喜欢自然语言处理。',
    '東京は日本の首都です。',
    '한국어 문장도 처리할 수 있나요?',
    'Привет, как дела?',
    'مرحبا بالعالم',
    'Ελληνικά γράμματα: α, β, γ.',
    'The quick brown fox jumps over the lazy dog.',
    'Tokenization of unbelievably uncharacteristically long words.',
    'Numbers like 3.14159, 2,718 and 1e-9 appear here.',
    'E-mail me at someone@example.com or visit https://example.org/path?q=1.',
    "Don't, won't, can't; isn't it?",
    'ALL CAPS SHOUTING SENTENCE!!!',
    '   leading and trailing spaces   ',
    'Tabs\tand\nnewlines inside.',
    'A mix of English and 中文 and emoji 😀 in one line.',
    'The weather today is neither good nor bad, just grey.',
    'Stock markets rallied after the central bank cut rates.',
    'She sells sea shells by the sea shore.',
    'Is this the real life? Is this just fantasy?',
    'Bonjour! Ça va? Très bien, merci.',
    '¿Dónde está la biblioteca?',
    ' '.join(['This sentence is long enough to be truncated at the chosen maximum length.'] * 4),
    'Short one.',
]


def _torch_inputs(batch):
  return {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in batch.items()}


def _mean_pool(hidden, mask):
  """Sentence-transformers' mean pooling, written out independently in numpy."""
  mask = mask[..., None].astype(np.float64)
  return (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)


def _apply(loaded, batch):
  """The output (logits or features) of a loaded ``(module, params)``, jitted."""
  module, params = loaded
  return np.asarray(jax.jit(lambda p, x: module.apply({'params': p}, x))(params, batch))


def _hidden_and_features(loaded, batch):
  """Token states ``(B, L, hidden)`` and pooled features of a loaded ``(module, params)``,
  from one compiled program."""
  module, params = loaded

  def forward(params, x):
    variables = {'params': params}
    return (module.apply(variables, x, method=bert.BertClassifier.hidden_states),
            module.apply(variables, x, method=bert.BertClassifier.features))

  return jax.tree.map(np.asarray, jax.jit(forward)(params, batch))


# --------------------------------------------------------------------------------------------
# Real MiniLM-L6 weights.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def minilm_folder():
  return bert.offline_minilm_path()


@pytest.fixture(scope='module')
def minilm(minilm_folder):
  return bert.load_bert(minilm_folder)


@pytest.fixture(scope='module')
def minilm_batch(minilm_folder):
  return tokenize(load_tokenizer(minilm_folder), SENTENCES, MAX_LENGTH)


@pytest.fixture(scope='module')
def minilm_torch_hidden(minilm_folder, minilm_batch):
  model = transformers.BertModel.from_pretrained(minilm_folder).eval()
  with torch.no_grad():
    return model(**_torch_inputs(minilm_batch)).last_hidden_state.numpy()


@pytest.mark.slow  # torch parity on the real MiniLM-L6 weights
def test_minilm_matches_transformers(minilm, minilm_batch, minilm_torch_hidden):
  module, _ = minilm
  assert module.pooling == 'mean'  # from the folder's 1_Pooling/config.json
  mask = minilm_batch['attention_mask'].astype(bool)
  assert (~mask).any() and mask.all(axis=1).any()  # padded and full-length rows both occur
  hidden, features = _hidden_and_features(minilm, minilm_batch)
  np.testing.assert_allclose(hidden[mask], minilm_torch_hidden[mask], atol=TOL, rtol=0)
  np.testing.assert_allclose(features, _mean_pool(minilm_torch_hidden, mask), atol=TOL, rtol=0)


def test_offline_minilm_path_and_config(minilm_folder):
  config = bert.BertConfig.from_json(os.path.join(minilm_folder, 'config.json'))
  assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
          config.intermediate_size) == (6, 384, 12, 1536)


# --------------------------------------------------------------------------------------------
# A small random BERT saved by transformers (the BERT-base code path: 'bert.' prefix, pooler,
# classifier, safetensors and torch pickle).
# --------------------------------------------------------------------------------------------

TINY = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=64)


@pytest.fixture(scope='module')
def tiny_folders(tmp_path_factory, minilm_folder):
  """``(torch model, {'safetensors': folder, 'bin': folder})`` of one random classifier."""
  torch.manual_seed(0)
  model = transformers.BertForSequenceClassification(
      transformers.BertConfig(num_labels=3, **TINY)).eval()
  with torch.no_grad():  # HF inits biases at 0 and norms at 1: perturb so every key matters.
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  folders = {}
  for kind, safe in (('safetensors', True), ('bin', False)):
    folder = tmp_path_factory.mktemp(f'tiny_bert_{kind}')
    model.save_pretrained(folder, safe_serialization=safe)
    for name in ('vocab.txt', 'tokenizer.json', 'tokenizer_config.json'):
      shutil.copy(os.path.join(minilm_folder, name), folder / name)
    folders[kind] = folder
  assert os.path.isfile(folders['bin'] / 'pytorch_model.bin')
  assert not os.path.isfile(folders['bin'] / 'model.safetensors')
  return model, folders


@pytest.fixture(scope='module')
def tiny_batch(tiny_folders):
  return tokenize(load_tokenizer(tiny_folders[1]['safetensors']), SENTENCES[:12], 32)


@pytest.fixture(scope='module')
def tiny_torch_outputs(tiny_folders, tiny_batch):
  with torch.no_grad():
    out = tiny_folders[0].bert(**_torch_inputs(tiny_batch))
  hidden = out.last_hidden_state.numpy()
  return {'hidden': hidden, 'cls': hidden[:, 0], 'pooler': out.pooler_output.numpy(),
          'mean': _mean_pool(hidden, tiny_batch['attention_mask'])}


# The torch pickle is checked with 'pooler', the pooling that reads every key of the file.
@pytest.mark.parametrize('kind,pooling', [('safetensors', 'cls'), ('safetensors', 'mean'),
                                          ('safetensors', 'pooler'), ('bin', 'pooler')])
def test_tiny_bert_matches_transformers(tiny_folders, tiny_batch, tiny_torch_outputs, kind,
                                        pooling):
  loaded = bert.load_bert(tiny_folders[1][kind], pooling=pooling)
  mask = tiny_batch['attention_mask'].astype(bool)
  hidden, features = _hidden_and_features(loaded, tiny_batch)
  np.testing.assert_allclose(hidden[mask], tiny_torch_outputs['hidden'][mask], atol=TOL, rtol=0)
  np.testing.assert_allclose(features, tiny_torch_outputs[pooling], atol=TOL, rtol=0)


def test_plain_bert_folder_defaults_to_cls_and_head_starts_at_zero(tiny_folders, tiny_batch):
  module, params = bert.load_bert(tiny_folders[1]['safetensors'], num_classes=5)
  assert module.pooling == 'cls'
  assert 'pooler' not in params  # not used by 'cls' pooling, so not loaded
  assert params['head']['kernel'].shape == (64, 5)
  assert not np.any(params['head']['kernel']) and not np.any(params['head']['bias'])
  assert _apply((module, params), tiny_batch).shape == (len(tiny_batch['input_ids']), 5)


def test_legacy_layernorm_gamma_beta_names_load_the_same(tiny_folders, tmp_path):
  source = tiny_folders[1]['safetensors']
  shutil.copytree(source, tmp_path, dirs_exist_ok=True)
  state = safetensors.numpy.load_file(source / 'model.safetensors')
  legacy = {k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias',
                                                                      'LayerNorm.beta'): v
            for k, v in state.items()}
  assert any(k.endswith('LayerNorm.gamma') for k in legacy)
  safetensors.numpy.save_file(legacy, tmp_path / 'model.safetensors')
  _, expected = bert.load_bert(source)
  _, got = bert.load_bert(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, got, expected)


@pytest.mark.slow  # compiles several BERT forwards
def test_dropout_only_in_training(tiny_folders, tiny_batch):
  loaded = bert.load_bert(tiny_folders[1]['safetensors'], pooling='mean')
  module, params = loaded
  variables = {'params': params}

  @functools.partial(jax.jit, static_argnums=0)
  def train_forward(module, key):
    return module.apply(variables, tiny_batch, train=True, rngs={'dropout': key})

  evaluated = _apply(loaded, tiny_batch)
  with pytest.raises(Exception, match='dropout'):  # training needs a 'dropout' rng
    jax.eval_shape(lambda: module.apply(variables, tiny_batch, train=True))
  trained = train_forward(module, jax.random.key(0))
  assert np.abs(np.asarray(trained) - evaluated).max() > 1e-3
  no_dropout = module.clone(dropout_rate=0., attention_dropout_rate=0.)
  np.testing.assert_allclose(train_forward(no_dropout, jax.random.key(0)), evaluated,
                             atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Loader errors: each names the file and the key.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_copy(tiny_folders, tmp_path):
  folder = tmp_path / 'bert'
  shutil.copytree(tiny_folders[1]['safetensors'], folder)
  return folder


def _edit_weights(folder, edit):
  path = folder / 'model.safetensors'
  state = safetensors.numpy.load_file(path)
  edit(state)
  safetensors.numpy.save_file(state, path)


def _edit_config(folder, **changes):
  path = folder / 'config.json'
  config = json.loads(path.read_text())
  config.update(changes)
  path.write_text(json.dumps(config))


def test_error_missing_key(tiny_copy):
  key = 'bert.encoder.layer.1.output.dense.bias'
  _edit_weights(tiny_copy, lambda state: state.pop(key))
  with pytest.raises(WeightsError, match=r'model\.safetensors.*missing keys.*' + re.escape(key)):
    bert.load_bert(tiny_copy)


def test_error_unexpected_key(tiny_copy):
  key = 'bert.encoder.layer.0.attention.self.extra.weight'
  _edit_weights(tiny_copy, lambda state: state.update({key: np.zeros(3, np.float32)}))
  with pytest.raises(WeightsError,
                     match=r'model\.safetensors.*unexpected keys.*' + re.escape(key)):
    bert.load_bert(tiny_copy)


def test_error_shape_disagrees_with_config(tiny_copy):
  _edit_config(tiny_copy, intermediate_size=96)
  with pytest.raises(WeightsError, match=r'model\.safetensors.*'
                     r"'bert\.encoder\.layer\.0\.intermediate\.dense\.weight'.*\(128, 64\).*"
                     r'\(96, 64\).*config\.json'):
    bert.load_bert(tiny_copy)


def test_error_unknown_model_type(tiny_copy):
  _edit_config(tiny_copy, model_type='roberta')
  with pytest.raises(WeightsError, match=r"config\.json: key 'model_type' is 'roberta'"):
    bert.load_bert(tiny_copy)


def test_error_missing_tokenizer_file(tiny_copy):
  os.remove(tiny_copy / 'tokenizer.json')
  os.remove(tiny_copy / 'vocab.txt')
  with pytest.raises(WeightsError,
                     match=re.escape(str(tiny_copy)) + r'.*tokenizer\.json or vocab\.txt'):
    bert.from_config({'path': str(tiny_copy), 'pooling': '', 'max_length': 16}, num_classes=2)


def test_error_unsupported_sentence_transformers_pooling(tiny_copy):
  (tiny_copy / '1_Pooling').mkdir()
  (tiny_copy / '1_Pooling' / 'config.json').write_text(
      json.dumps({'pooling_mode_max_tokens': True, 'pooling_mode_mean_tokens': False}))
  with pytest.raises(WeightsError,
                     match=r"1_Pooling/config\.json: pooling modes \['pooling_mode_max_tokens'\]"):
    bert.load_bert(tiny_copy)


# --------------------------------------------------------------------------------------------
# SVE on BERT.
# --------------------------------------------------------------------------------------------

LAYER_MATRICES = ('attention/query', 'attention/key', 'attention/value', 'attention/output',
                  'intermediate', 'output')


def _leaf_roles(params):
  """``{path: (role, leaf)}`` from SVE_RULES, first match wins (as the core documents)."""
  roles = {}
  for keypath, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = '/'.join(k.key for k in keypath)
    roles[path] = (next(role for regex, role in bert.SVE_RULES if re.search(regex, path)), leaf)
  return roles


@pytest.mark.slow  # compiles several BERT forwards
def test_sve_identity_at_zero_noise(tiny_folders, tiny_batch):
  module, params = bert.load_bert(tiny_folders[1]['safetensors'], num_classes=3)
  params = dict(params)  # a non-zero head, so logits depend on every member leaf
  params['head'] = {'kernel': jax.random.normal(jax.random.key(1), (64, 3)),
                    'bias': jnp.array([0.1, -0.2, 0.3])}
  frozen, s = sve_jax.decompose(params, rules=bert.SVE_RULES)

  expected_decomposed = {f'encoder/layer_{i}/{m}/kernel' for i in range(2)
                         for m in LAYER_MATRICES}
  assert set(sve_jax.factorize.layouts(frozen)) == expected_decomposed
  members = {'/'.join(p) for p in sve_jax.tree.flatten_paths(s)} - expected_decomposed
  assert members == ({p.replace('/kernel', '/bias') for p in expected_decomposed}
                     | {'head/kernel', 'head/bias'})

  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 2, noise_std=0.)
  counts = sve_jax.count_params(frozen, trainables)
  # Worked by hand for hidden 64, FFN 128, 2 layers, vocab 30522, 64 positions, 3 classes.
  head = 65 * 3
  per_layer_svs_and_biases = 6 * 64 + (5 * 64 + 128)
  assert counts['trainable_per_member'] == 2 * per_layer_svs_and_biases + head
  embeddings = (30522 + 64 + 2) * 64 + 2 * 64
  per_layer = 4 * (64 * 64 + 64) + 2 * (64 * 128) + 128 + 64 + 2 * 2 * 64
  assert counts['backbone'] == embeddings + 2 * per_layer + head

  apply_fn = lambda p, x: module.apply({'params': p}, x)
  expected = np.asarray(jax.jit(apply_fn)(params, tiny_batch))
  for execution in ('compose', 'factored'):
    sve_apply = jax.jit(sve_jax.make_sve_apply(apply_fn, execution=execution))
    got = np.asarray(sve_apply({'frozen': frozen, 'trainables': trainables}, tiny_batch))
    assert got.shape == (2,) + expected.shape
    for member in got:
      np.testing.assert_allclose(member, expected, atol=TOL, rtol=0, err_msg=execution)


def _overhead_row(config):
  """``(backbone params, per-member trainables)`` of the docstring table, from shapes."""
  module = bert.BertClassifier(config, pooling='mean')
  batch = {'input_ids': jnp.zeros((1, 4), jnp.int32),
           'attention_mask': jnp.ones((1, 4), jnp.int32)}
  params = jax.eval_shape(module.init, jax.random.key(0), batch)['params']
  roles = _leaf_roles(params).values()
  per_member = (sum(min(leaf.shape) for role, leaf in roles if role == 'decompose')
                + sum(leaf.size for role, leaf in roles if role == 'member'))
  return sum(leaf.size for _, leaf in roles), per_member


@pytest.mark.parametrize('name,config', [
    ('MiniLM-L6', bert.BertConfig(30522, 384, 6, 12, 1536)),
    ('BERT-base', bert.BertConfig(30522, 768, 12, 12, 3072)),
])
def test_docstring_overhead_table(name, config):
  backbone, per_member = _overhead_row(config)
  row = next(line for line in bert.__doc__.splitlines() if line.strip().startswith(name))
  assert f'({backbone / 1e6:.2f}M)' in row
  assert f'{per_member:,} ({100 * per_member / backbone:.3f} %)' in row
  for m in (4, 8):
    assert f'{m * per_member:,} ({100 * m * per_member / backbone:.2f} %)' in row


@pytest.mark.slow
def test_bfloat16_compute_dtype_is_close_to_float32(tiny_bert_folder):
  outputs = {}
  for dtype in ('float32', 'bfloat16'):
    backbone = models.load_backbone(
        {'name': 'bert', 'path': tiny_bert_folder, 'pooling': '', 'max_length': 16,
         'dtype': dtype, 'dropout_rate': -1}, num_classes=3)
    frozen, s = sve_jax.decompose(backbone.params, backbone.rules)
    trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 2, noise_std=0.5)
    inputs = backbone.tokenize(['a calm sea', 'the storm broke the mast at noon'])
    outputs[dtype] = np.asarray(sve_jax.make_sve_apply(backbone.apply)(
        {'frozen': frozen, 'trainables': trainables}, inputs), np.float32)
  assert outputs['bfloat16'].shape == (2, 2, 3)
  np.testing.assert_allclose(outputs['bfloat16'], outputs['float32'], atol=0.05)
  assert not np.array_equal(outputs['bfloat16'], outputs['float32'])  # really computed in bf16
