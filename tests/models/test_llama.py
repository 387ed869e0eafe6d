"""Llama-family decoder: parity with transformers (torch), GGUF and safetensors loading, errors,
SVE on the scanned decoder, and the Gemma einsum layouts.

References are independent of our code: transformers' ``LlamaForCausalLM`` /
``Qwen2ForCausalLM`` on the same files (its own GGUF reader and dequantiser), and its GGUF
tokenizer.
"""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sve_jax
from conftest import parse_config
from hub_cache import add_repo
from llama_files import random_hf_state
from llama_files import TINY
from llama_files import write_gguf
from llama_files import write_hf_folder
from sve_jax import layout as layout_lib
from sve_jax import models
from sve_jax.models import llama
from sve_jax.models.weights_io import WeightsError

PROMPTS = [
    'Tweet: I love this phone, the battery lasts forever!\nSentiment:',
    'Tweet: worst customer service ever\nSentiment:',
    'The capital of France is',
    '<|im_start|>user\nIs 17 a prime number?<|im_end|>\n<|im_start|>assistant\n',
    'a',
]
SMOLLM2_CONFIG = 'configs/smollm2_tweets.py'
RTOL = 1e-4  # of each row's largest |logit|


def _assert_logits_close(ours, reference, mask):
  """Full-vocabulary logits agree at the real positions to RTOL of each row's scale."""
  ours, reference = ours[mask], reference[mask]
  scale = np.abs(reference).max(axis=-1, keepdims=True)
  np.testing.assert_array_less(np.abs(ours - reference) / scale, RTOL)


def _torch_logits(model, batch):
  import torch
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(batch['input_ids'].astype(np.int64)),
                 attention_mask=torch.from_numpy(batch['attention_mask'].astype(np.int64))
                 ).logits.float().numpy()


def _lm_logits(config, params, batch, **module_args):
  module = llama.LlamaDecoder(config, **module_args)
  return np.asarray(jax.jit(lambda p, x: module.apply({'params': p}, x))(params, batch))


# --------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct GGUF.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def smollm2():
  return llama.read_gguf(llama.offline_smollm2_path())


@pytest.mark.slow
def test_smollm2_logits_and_tokens_match_transformers(smollm2):
  import torch
  import transformers
  folder, name = os.path.split(llama.offline_smollm2_path())
  config = smollm2.config
  assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size,
          config.num_attention_heads, config.num_key_value_heads, config.vocab_size,
          config.tie_word_embeddings, config.rope_theta) == (30, 576, 1536, 9, 3, 49152, True,
                                                             100000.)
  batch = llama.tokenize(smollm2.tokenizer, PROMPTS, 32, smollm2.pad_token_id)
  mask = batch['attention_mask'].astype(bool)
  assert (~mask).any() and mask.sum(1).min() == 1  # padded rows, one a single token
  reference_tokens = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)(
      PROMPTS, add_special_tokens=False)['input_ids']
  assert [list(row[m]) for row, m in zip(batch['input_ids'], mask)] == reference_tokens
  model = transformers.LlamaForCausalLM.from_pretrained(folder, gguf_file=name,
                                                        dtype=torch.float32).eval()
  _assert_logits_close(_lm_logits(config, smollm2.params, batch), _torch_logits(model, batch),
                       mask)


@pytest.mark.slow
def test_smollm2_verbaliser_and_class_logits(smollm2):
  assert llama.verbalizer_ids(smollm2.tokenizer, (' negative', ' neutral', ' positive')) == (
      3524, 9174, 2731)
  batch = llama.tokenize(smollm2.tokenizer, PROMPTS[:2], 24, smollm2.pad_token_id)
  full = _lm_logits(smollm2.config, smollm2.params, batch)
  labels = (3524, 9174, 2731)
  classes = _lm_logits(smollm2.config, smollm2.params, batch, label_token_ids=labels)
  last = batch['attention_mask'].sum(1) - 1
  np.testing.assert_allclose(classes, full[np.arange(2), last][:, labels], rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Tiny GGUF files and HF folders (tests/llama_files.py).
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def tiny_state():
  return random_hf_state(seed=0)


@pytest.fixture(scope='module')
def tiny_gguf(tiny_state, tmp_path_factory):
  """``{'q': quantised file, 'f32': float32 file}`` of the same random weights."""
  folder = tmp_path_factory.mktemp('tiny_gguf')
  return {'q': write_gguf(folder / 'tiny.Q4_1.gguf', tiny_state),
          'f32': write_gguf(folder / 'tiny.f32.gguf', tiny_state, quantize=False)}


@pytest.mark.slow  # a torch reference
def test_tiny_gguf_matches_transformers(tiny_gguf):
  import torch
  import transformers
  folder, name = os.path.split(tiny_gguf['q'])
  contents = llama.read_gguf(tiny_gguf['q'])
  texts = ['the pos neg at', 'Ġhe <|im_start|> in on', 'a']
  batch = llama.tokenize(contents.tokenizer, texts, 12, contents.pad_token_id)
  mask = batch['attention_mask'].astype(bool)
  reference_tokens = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)(
      texts, add_special_tokens=False)['input_ids']
  assert [list(row[m]) for row, m in zip(batch['input_ids'], mask)] == reference_tokens
  model = transformers.LlamaForCausalLM.from_pretrained(folder, gguf_file=name,
                                                        dtype=torch.float32).eval()
  _assert_logits_close(_lm_logits(contents.config, contents.params, batch),
                       _torch_logits(model, batch), mask)


def test_gguf_float32_weights_load_exactly_with_rotary_rows_restored(tiny_gguf, tiny_state):
  params = llama.read_gguf(tiny_gguf['f32']).params
  layers = params['layers']
  for i in range(TINY['num_hidden_layers']):
    p = f'model.layers.{i}.'
    for ours, theirs in ((layers['attention']['q']['kernel'], 'self_attn.q_proj.weight'),
                         (layers['attention']['k']['kernel'], 'self_attn.k_proj.weight'),
                         (layers['mlp']['down']['kernel'], 'mlp.down_proj.weight')):
      np.testing.assert_array_equal(ours[i], tiny_state[p + theirs].T)
    np.testing.assert_array_equal(layers['input_norm']['scale'][i],
                                  tiny_state[p + 'input_layernorm.weight'])
  np.testing.assert_array_equal(params['embed_tokens']['embedding'],
                                tiny_state['model.embed_tokens.weight'])
  assert 'lm_head' not in params


def test_gguf_digits_are_split_as_llama_cpp_smollm_pre_tokenizer(tiny_gguf):
  tokenizer = llama.read_gguf(tiny_gguf['q']).tokenizer
  pieces = tokenizer.encode(' pos 123', add_special_tokens=False).tokens
  # The vocabulary has 'Ġ1', but 'smollm' isolates every digit (transformers' GGUF
  # converter ignores tokenizer.ggml.pre and would give 'Ġ1', '2', '3').
  assert pieces == ['Ġpos', 'Ġ', '1', '2', '3']


def test_tokenize_right_pads_and_keeps_the_prompt_end(tiny_gguf):
  contents = llama.read_gguf(tiny_gguf['q'])
  batch = llama.tokenize(contents.tokenizer, ['the pos', 'a b c d e f g h'], 4, 0)
  np.testing.assert_array_equal(batch['attention_mask'], [[1, 1, 1, 0], [1, 1, 1, 1]])
  assert batch['input_ids'][1].tolist() == contents.tokenizer.encode(
      'a b c d e f g h').ids[-4:]
  np.testing.assert_array_equal(llama.last_positions(batch['attention_mask']), [2, 3])


# --------------------------------------------------------------------------------------------
# GGUF errors: each names the file and the tensor.
# --------------------------------------------------------------------------------------------


def test_truncated_gguf_names_the_file_and_tensor(tiny_gguf, tmp_path):
  path = tmp_path / 'cut.gguf'
  data = open(tiny_gguf['q'], 'rb').read()
  path.write_bytes(data[:len(data) - 600])
  with pytest.raises(WeightsError, match=re.escape(str(path)) + r": tensor '[\w.]+' ends at "
                     r'byte [\d,]+ but the file has [\d,]+ bytes: the file is truncated'):
    llama.read_gguf(path)


def test_corrupt_gguf_header_names_the_file(tiny_gguf, tmp_path):
  path = tmp_path / 'bad.gguf'
  path.write_bytes(b'XXXX' + open(tiny_gguf['q'], 'rb').read()[4:])
  with pytest.raises(WeightsError, match=re.escape(f'cannot read GGUF file {path}') +
                     '.*magic'):
    llama.read_gguf(path)
  path.write_bytes(open(tiny_gguf['q'], 'rb').read()[:100])
  with pytest.raises(WeightsError, match=re.escape(f'cannot read GGUF file {path}')):
    llama.read_gguf(path)


def test_unsupported_quantisation_type_names_the_file_and_tensor(tiny_state, tmp_path):
  import gguf
  kind = gguf.GGMLQuantizationType.IQ4_NL
  name = 'blk.1.ffn_up.weight'
  shape = tiny_state['model.layers.1.mlp.up_proj.weight'].shape
  block, type_size = gguf.GGML_QUANT_SIZES[kind]
  raw = np.zeros((shape[0], shape[1] // block * type_size), np.uint8)
  path = write_gguf(tmp_path / 'iq4.gguf', tiny_state, override_types={name: (raw, raw.shape,
                                                                                kind)})
  with pytest.raises(WeightsError, match=re.escape(f"{path}: tensor '{name}' has type IQ4_NL, "
                                                   'which is not supported')):
    llama.read_gguf(path)


def test_missing_and_misshapen_gguf_tensors_are_named(tiny_state, tmp_path):
  state = dict(tiny_state)
  del state['model.layers.1.mlp.gate_proj.weight']
  path = write_gguf(tmp_path / 'missing.gguf', state)
  with pytest.raises(WeightsError, match=re.escape(path) + r".*missing keys \['blk\.1\."
                                         r"ffn_gate\.weight'\]"):
    llama.read_gguf(path)
  state = dict(tiny_state)
  state['model.layers.0.mlp.up_proj.weight'] = state['model.layers.0.mlp.up_proj.weight'][:32]
  path = write_gguf(tmp_path / 'shape.gguf', state)
  with pytest.raises(WeightsError, match=re.escape(path) + r": key 'blk\.0\.ffn_up\.weight' "
                                         r'has shape \(32, 32\), expected \(64, 32\)'):
    llama.read_gguf(path)


# --------------------------------------------------------------------------------------------
# Hugging Face folders: sharded safetensors, by path and by hub id (offline).
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def tiny_tokenizer(tiny_gguf):
  return llama.read_gguf(tiny_gguf['q']).tokenizer


@pytest.mark.slow  # torch references
@pytest.mark.parametrize('model_type,bias,tie,extra', [
    ('llama', False, True, {}),
    ('llama', False, False, {'rope_scaling': {'rope_type': 'llama3', 'factor': 8.,
                                              'low_freq_factor': 1., 'high_freq_factor': 4.,
                                              'original_max_position_embeddings': 8}}),
    ('llama', False, False, {'rope_scaling': {'rope_type': 'linear', 'factor': 4.}}),
    ('qwen2', True, False, {}),
])
def test_hf_folder_matches_transformers(tiny_tokenizer, tmp_path, model_type, bias, tie,
                                        extra):
  import torch
  import transformers
  state = random_hf_state(seed=1, attention_bias=bias, tie=tie)
  folder = write_hf_folder(tmp_path / model_type, state, tiny_tokenizer, model_type, tie=tie,
                           shards=1 if tie else 3, **extra)
  config, params = llama.load_hf(folder)
  assert config.attention_bias == bias and config.tie_word_embeddings == tie
  assert ('lm_head' in params) != tie
  texts = ['the pos at neg on in the pos at en', 'neg']  # 16 positions: rope scaling shows
  batch = llama.tokenize(llama.hf_tokenizer(folder)[0], texts, 16, 0)
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  _assert_logits_close(_lm_logits(config, params, batch), _torch_logits(model, batch),
                       batch['attention_mask'].astype(bool))


def test_safetensors_by_hub_id_offline_equals_the_gguf_weights(tiny_gguf, tiny_state,
                                                                tiny_tokenizer, tmp_path,
                                                                monkeypatch):
  from huggingface_hub import constants
  folder = write_hf_folder(tmp_path / 'files', tiny_state, tiny_tokenizer, shards=2)
  assert os.path.isfile(os.path.join(folder, 'model-00002-of-00002.safetensors'))
  cache = tmp_path / 'cache'
  add_repo(cache, 'someone/tiny-llama', folder)
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
  monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
  spec = {'name': 'llama', 'path': 'hf-hub:someone/tiny-llama', 'prompt': 'x: {text} =',
          'verbalizer': (' pos', ' neg'), 'max_length': 8, 'dtype': 'float32'}
  by_id = models.load_backbone(spec, num_classes=2)
  by_gguf = models.load_backbone({**spec, 'path': tiny_gguf['f32']}, num_classes=2)
  jax.tree.map(np.testing.assert_array_equal, by_id.params, by_gguf.params)
  assert by_id.module == by_gguf.module
  texts = ['the pos', 'at']
  jax.tree.map(np.testing.assert_array_equal, by_id.tokenize(texts), by_gguf.tokenize(texts))


def test_bf16_safetensors_load_as_float32(tiny_state, tiny_tokenizer, tmp_path):
  import torch
  from safetensors.torch import save_file
  folder = write_hf_folder(tmp_path / 'bf16', tiny_state, tiny_tokenizer, shards=1)
  bf16 = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in tiny_state.items()}
  save_file(bf16, os.path.join(folder, 'model.safetensors'))
  _, params = llama.load_hf(folder)
  np.testing.assert_array_equal(params['layers']['mlp']['up']['kernel'][1],
                                bf16['model.layers.1.mlp.up_proj.weight'].float().numpy().T)


def test_hf_shard_missing_a_tensor_names_the_shard(tiny_state, tiny_tokenizer, tmp_path):
  from safetensors.numpy import load_file, save_file
  folder = write_hf_folder(tmp_path / 'cut', tiny_state, tiny_tokenizer, shards=2)
  shard = os.path.join(folder, 'model-00001-of-00002.safetensors')
  state = load_file(shard)
  state.pop(sorted(state)[0])
  save_file(state, shard)
  with pytest.raises(WeightsError, match=re.escape(shard) + '.*index.json lists'):
    llama.load_hf(folder)


def test_unsupported_hf_config_is_named(tiny_state, tiny_tokenizer, tmp_path):
  folder = write_hf_folder(tmp_path / 'gemma', tiny_state, tiny_tokenizer, 'gemma', shards=1)
  with pytest.raises(WeightsError, match=r"config\.json: key 'model_type' is 'gemma'"):
    llama.load_hf(folder)



def test_a_sliding_window_shorter_than_the_prompts_is_refused(tiny_state, tiny_tokenizer,
                                                              tmp_path):
  # Attention is always full here: exact for prompts no longer than the window, so a
  # max_length above a window that applies is refused before any weight is read.
  mistral = write_hf_folder(tmp_path / 'mistral', tiny_state, tiny_tokenizer, 'mistral',
                            shards=1, sliding_window=8)
  assert llama.load_hf(mistral)[0].sliding_window == 8
  sizes = {'vocab_size': 64, 'hidden_size': 32, 'num_hidden_layers': 2,
           'num_attention_heads': 4, 'intermediate_size': 48, 'sliding_window': 8}
  qwen2 = llama.LlamaConfig.from_hf({'model_type': 'qwen2', **sizes})
  assert qwen2.sliding_window == 0  # Qwen2 carries a window it applies only when told to
  assert llama.LlamaConfig.from_hf({'model_type': 'qwen2', 'use_sliding_window': True,
                                    **sizes}).sliding_window == 8
  spec = {'name': 'llama', 'path': mistral, 'prompt': 'Text: {text}\nLabel:',
          'verbalizer': (' pos', ' neg', ' the'), 'max_length': 16, 'dtype': 'float32'}
  with pytest.raises(ValueError, match=r'max_length=16 exceeds .* window of 8 tokens'):
    models.load_backbone(spec, num_classes=3)
  assert models.load_backbone({**spec, 'max_length': 8}, num_classes=3).module is not None

# --------------------------------------------------------------------------------------------
# SVE on a tiny random decoder (scanned layers).
# --------------------------------------------------------------------------------------------

SMALL = llama.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                          tie_word_embeddings=True, attention_bias=True)
LABELS = (5, 17, 40)
PROJECTIONS = ('attention/q', 'attention/k', 'attention/v', 'attention/o', 'mlp/gate', 'mlp/up',
               'mlp/down')


@pytest.fixture(scope='module')
def small():
  """``(module, params, batch)``: a random decoder classifying by 3 label tokens."""
  module = llama.LlamaDecoder(SMALL, label_token_ids=LABELS)
  batch = {'input_ids': jax.random.randint(jax.random.key(0), (3, 7), 0, 64),
           'attention_mask': jnp.array([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6])}

  @jax.jit
  def init(key):  # random norms and biases too, so every leaf matters
    params = module.init(key, batch)['params']
    return jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape),
                        params)

  return module, init(jax.random.key(1)), batch


def test_scanned_params_have_a_layer_axis_and_sve_decomposes_the_seven_projections(small):
  _, params, _ = small
  frozen, s = sve_jax.decompose(params, rules=llama.SVE_RULES)
  layouts = sve_jax.factorize.layouts(frozen)
  assert set(layouts) == {f'layers/{p}/kernel' for p in PROJECTIONS}
  hd = 8
  shapes = {'attention/q': (32, 4 * hd), 'attention/k': (32, 2 * hd), 'attention/v': (32, 2 * hd),
            'attention/o': (4 * hd, 32), 'mlp/gate': (32, 48), 'mlp/up': (32, 48),
            'mlp/down': (48, 32)}
  for name, (d_in, d_out) in shapes.items():
    lay = layouts[f'layers/{name}/kernel']
    assert (lay.stack_shape, lay.d_in, lay.d_out) == ((2,), d_in, d_out), name
  members = {'/'.join(p) for p in sve_jax.tree.flatten_paths(s)} - set(layouts)
  assert members == {f'layers/attention/{n}/bias' for n in 'qkv'}  # Qwen2-style biases
  singular = sve_jax.tree.flatten_paths(s)
  assert singular[('layers', 'attention', 'k', 'kernel')].shape == (2, 2 * hd)
  attention, _ = layout_lib.select(params, llama.ATTENTION_RULES)
  assert {'/'.join(p) for p in attention} == {f'layers/attention/{n}/kernel' for n in 'qkvo'}


@pytest.mark.slow  # over 5 s on 2 cores
def test_sve_zero_noise_members_equal_the_backbone_on_every_execution(small):
  module, params, batch = small
  apply_fn = lambda p, x: module.apply({'params': p}, x)
  expected = np.asarray(jax.jit(apply_fn)(params, batch))
  assert expected.shape == (3, 3)
  frozen, s = sve_jax.decompose(params, rules=llama.SVE_RULES)
  trainables = sve_jax.init_members(jax.random.key(0), frozen, s, 2, noise_std=0.)
  # The factored path reaches every projection inside the scanned layers: B·T positions each.
  positions = sve_jax.execution.kernel_positions(apply_fn, frozen, s, batch)
  assert positions == {f'layers/{p}/kernel': 3 * 7 for p in PROJECTIONS}
  for execution in ('compose', 'factored', 'auto'):
    sve_apply = jax.jit(sve_jax.make_sve_apply(apply_fn, execution=execution))
    got = np.asarray(sve_apply({'frozen': frozen, 'trainables': trainables}, batch))
    for member in got:
      np.testing.assert_allclose(member, expected, atol=1e-4, rtol=0, err_msg=execution)


@pytest.mark.slow  # several compiled decoders
def test_factored_composed_and_auto_give_the_same_logits_and_gradients(small):
  module, params, batch = small
  frozen, s = sve_jax.decompose(params, rules=llama.SVE_RULES)
  trainables = sve_jax.init_members(jax.random.key(3), frozen, s, 2, noise_std=0.05)
  weights = jax.random.normal(jax.random.key(4), (2, 3, 3))
  results = {}
  for execution, remat in (('compose', False), ('factored', True), ('auto', False)):
    apply_fn = lambda p, x, remat=remat: module.clone(remat=remat).apply({'params': p}, x)
    sve_apply = sve_jax.make_sve_apply(apply_fn, execution=execution, training=True)
    loss = lambda t: jnp.sum(weights * sve_apply({'frozen': frozen, 'trainables': t}, batch))
    results[execution, remat] = jax.jit(jax.value_and_grad(loss))(trainables)
  (value, grads) = results['compose', False]
  assert np.isfinite(value) and any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  for key, (other_value, other_grads) in results.items():
    np.testing.assert_allclose(other_value, value, rtol=1e-5, err_msg=str(key))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4,
                                                         err_msg=str(key)), other_grads, grads)


@pytest.mark.slow  # several compiled decoders
def test_remat_and_bfloat16(small):
  module, params, batch = small
  expected = module.apply({'params': params}, batch)
  np.testing.assert_allclose(module.clone(remat=True).apply({'params': params}, batch),
                             expected, atol=1e-5)
  low = module.clone(dtype=jnp.bfloat16).apply({'params': params}, batch)
  assert low.dtype == jnp.float32  # logits come back in float32
  np.testing.assert_allclose(low, expected, atol=0.1 * np.abs(expected).max())


def test_class_logits_are_the_lm_logits_at_the_last_real_token(small):
  module, params, batch = small
  classes = module.apply({'params': params}, batch)
  full = module.clone(label_token_ids=None).apply({'params': params}, batch)
  last = np.array([6, 3, 0])
  np.testing.assert_allclose(classes, np.asarray(full)[np.arange(3), last][:, LABELS],
                             atol=1e-5)
  # Padding never leaks into real positions.
  changed = dict(batch, input_ids=batch['input_ids'].at[1, 5].set(1))
  np.testing.assert_allclose(module.apply({'params': params}, changed), classes, atol=1e-6)


@pytest.mark.slow  # over 5 s on 2 cores
def test_untied_head_restricts_its_own_rows(small):
  _, _, batch = small
  config = llama.LlamaConfig(**{**SMALL.__dict__, 'tie_word_embeddings': False})
  module = llama.LlamaDecoder(config, label_token_ids=LABELS)
  params = jax.jit(module.init)(jax.random.key(5), batch)['params']
  assert params['lm_head']['kernel'].shape == (32, 64)
  full = llama.LlamaDecoder(config).apply({'params': params}, batch)
  np.testing.assert_allclose(module.apply({'params': params}, batch),
                             np.asarray(full)[np.arange(3), [6, 3, 0]][:, LABELS], atol=1e-5)


#: The backbones of the module docstring's overhead table, by the name its row starts with.
DOCSTRING_ROWS = {
    'SmolLM2-135M': llama.LlamaConfig(
        vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, intermediate_size=1536, tie_word_embeddings=True),
    'Gemma 3 270M': llama.LlamaConfig(
        vocab_size=262144, hidden_size=640, num_hidden_layers=18, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, intermediate_size=2048, tie_word_embeddings=True,
        architecture='gemma3', hidden_act='gelu_pytorch_tanh', sliding_window=512,
        layer_types=llama.gemma3_layer_types(18)),
}


@pytest.mark.parametrize('name', sorted(DOCSTRING_ROWS))
def test_docstring_overhead_row(name):
  """A row of the module docstring's overhead table, recomputed from the parameter shapes."""
  config = DOCSTRING_ROWS[name]
  batch = {'input_ids': jnp.zeros((1, 4), jnp.int32), 'attention_mask': jnp.ones((1, 4))}
  params = jax.eval_shape(llama.LlamaDecoder(config).init, jax.random.key(0), batch)['params']
  kernels, members = layout_lib.select(params, llama.SVE_RULES)
  assert not members
  per_member = sum(lay.rank * lay.stack_shape[0] for lay in kernels.values())
  backbone = sve_jax.tree.num_params(params)
  row = next(line for line in llama.__doc__.splitlines() if f'{name} (' in line)
  assert f'({backbone:,})' in row
  assert f'{per_member // config.num_hidden_layers:,} ' in row
  assert f'{per_member:,} ({100 * per_member / backbone:.3f} %)' in row
  assert f'{4 * per_member:,} ({400 * per_member / backbone:.2f} %)' in row


# --------------------------------------------------------------------------------------------
# Gemma's einsum kernels (the `gemma` library's param tree, built by hand).
# --------------------------------------------------------------------------------------------

G_HEADS, G_KV, G_D, G_HD, G_FFN, G_LAYERS = 4, 2, 16, 8, 24, 3

#: name -> (shape of one layer's kernel, the einsum gemma computes, matrices it holds)
GEMMA = {
    'attn/q_einsum/w': ((G_HEADS, G_D, G_HD), 'BTD,NDH->BTNH', 1),
    'attn/kv_einsum/w': ((2, G_KV, G_D, G_HD), 'BSD,CKDH->CBSKH', 2),
    'attn/attn_vec_einsum/w': ((G_HEADS, G_HD, G_D), 'BTNH,NHD->BTD', 1),
    'mlp/gating_einsum/w': ((2, G_FFN, G_D), '...F,NHF->N...H', 2),
    'mlp/linear/w': ((G_FFN, G_D), '...H,HF->...F', 1),
}
#: (d_in, d_out) of each matrix.
GEMMA_MATRICES = {'attn/q_einsum/w': (G_D, G_HEADS * G_HD), 'attn/kv_einsum/w': (G_D, G_KV * G_HD),
                  'attn/attn_vec_einsum/w': (G_HEADS * G_HD, G_D),
                  'mlp/gating_einsum/w': (G_D, G_FFN), 'mlp/linear/w': (G_FFN, G_D)}


def _gemma_tree(scanned: bool):
  rng = np.random.default_rng(7)
  draw = lambda shape: rng.standard_normal(shape).astype(np.float32)
  layer_shape = (G_LAYERS,) if scanned else ()
  norms = {'pre_attention_norm': {'scale': draw(layer_shape + (G_D,))},
           'pre_ffw_norm': {'scale': draw(layer_shape + (G_D,))}}

  def layer():
    tree = {'attn': {}, 'mlp': {}, **norms}
    for path, (shape, _, _) in GEMMA.items():
      group, name, _ = path.split('/')
      tree[group][name] = {'w': draw(layer_shape + shape)}
    return tree

  body = {'layers': layer()} if scanned else {f'layer_{i}': layer() for i in range(2)}
  return {'transformer': {'embedder': {'input_embedding': draw((50, G_D))},
                          'final_norm': {'scale': draw((G_D,))}, **body}}


def _gemma_inputs(path):
  rng = np.random.default_rng(8)
  if 'attn_vec' in path:
    return rng.standard_normal((2, 5, G_HEADS, G_HD)).astype(np.float32)
  if 'linear' in path:
    return rng.standard_normal((2, 5, G_FFN)).astype(np.float32)
  return rng.standard_normal((2, 5, G_D)).astype(np.float32)


@pytest.mark.parametrize('scanned', [False, True])
def test_gemma_rules_factorise_each_projection_matrix(scanned):
  params = _gemma_tree(scanned)
  frozen, s = sve_jax.decompose(params, rules=llama.GEMMA_RULES)
  layouts = sve_jax.factorize.layouts(frozen)
  prefixes = ['transformer/layers'] if scanned else ['transformer/layer_0', 'transformer/layer_1']
  assert set(layouts) == {f'{p}/{k}' for p in prefixes for k in GEMMA}
  assert not {'/'.join(p) for p in sve_jax.tree.flatten_paths(s)} - set(layouts)  # no biases
  flat = sve_jax.tree.flatten_paths(params)
  for path, lay in layouts.items():
    name = path.split('/', 2)[2]
    _, equation, matrices = GEMMA[name]
    stack = ((G_LAYERS,) if scanned else ()) + ((matrices,) if matrices > 1 else ())
    assert (lay.stack_shape, (lay.d_in, lay.d_out)) == (stack, GEMMA_MATRICES[name]), path
    # The matrix view computes what gemma's einsum computes: y = x · W per stacked matrix.
    kernel = np.asarray(flat[tuple(path.split('/'))])
    x = _gemma_inputs(name)
    w = np.asarray(layout_lib.as_matrices(kernel, lay))
    for index in np.ndindex(*stack):
      sub_kernel = kernel[index[0]] if scanned else kernel
      expected = np.einsum(equation, x, sub_kernel)
      if matrices > 1:
        expected = expected[index[-1]]
      got = x.reshape(2, 5, -1) @ w[index]
      np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-4,
                                 err_msg=f'{path}{index}')
  composed = jax.jit(sve_jax.compose)(frozen, s)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), composed, params)


def test_gemma_rules_reject_a_kernel_with_too_few_axes():
  with pytest.raises(layout_lib.LayoutError, match=r'kv_einsum/w: shape \(2, 16, 8\)'):
    sve_jax.decompose({'attn': {'kv_einsum': {'w': jnp.ones((2, 16, 8))}}},
                      rules=llama.GEMMA_RULES)


# --------------------------------------------------------------------------------------------
# The backbone from a config.
# --------------------------------------------------------------------------------------------


def test_from_config_checks_the_verbaliser_and_prompt(tiny_gguf):
  spec = {'name': 'llama', 'path': tiny_gguf['q'], 'prompt': 'Text: {text}\nLabel:',
          'verbalizer': (' pos', ' neg', ' the'), 'max_length': 16, 'dtype': 'float32'}
  backbone = models.load_backbone(spec, num_classes=3)
  assert backbone.module.label_token_ids == (266, 269, 260)
  inputs = backbone.tokenize(['the pos'])
  assert backbone.apply(backbone.params, inputs).shape == (1, 3)
  with pytest.raises(ValueError, match=r'verbalizer has 3 label words .* 2 classes'):
    models.load_backbone(spec, num_classes=2)
  with pytest.raises(ValueError, match=r'share first tokens'):
    models.load_backbone({**spec, 'verbalizer': (' pos', ' posx', ' the')}, num_classes=3)
  with pytest.raises(ValueError, match=r'must contain \{text\}'):
    models.load_backbone({**spec, 'prompt': 'no slot'}, num_classes=3)
  bf16 = models.load_backbone({**spec, 'dtype': 'bfloat16', 'remat': True}, num_classes=3)
  assert bf16.module.dtype == jnp.bfloat16 and bf16.module.remat


def test_smollm2_config_prompt_and_verbaliser_override_from_the_command_line():
  config = parse_config(SMOLLM2_CONFIG)
  assert config.model.name == 'llama' and config.model.path == '' and config.num_members == 4
  assert config.model.verbalizer == (' negative', ' neutral', ' positive')
  config = parse_config(SMOLLM2_CONFIG, '--config.model.prompt=Review: {text}\nThe review is',
                        "--config.model.verbalizer=(' bad', ' good')")
  assert config.model.verbalizer == (' bad', ' good')
  assert config.model.prompt == 'Review: {text}\nThe review is'
  models.validate_model_config(config.model)
  with pytest.raises(ValueError, match=r'config\.model\.prompt=.* must contain \{text\}'):
    models.validate_model_config({**config.model.to_dict(), 'prompt': 'no slot'})
  with pytest.raises(ValueError, match=r'config\.model\.verbalizer=\(\) must be a tuple'):
    models.validate_model_config({**config.model.to_dict(), 'verbalizer': ()})
