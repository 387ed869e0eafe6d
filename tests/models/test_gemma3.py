"""Gemma 3 in the project's own decoder (sve_jax.models.llama, architecture 'gemma3').

References are independent of our code: transformers' ``Gemma3ForCausalLM`` on the same
weights (a tiny random one whose sliding window of 4 tokens is shorter than the prompts, so
the local/global layer pattern matters; and one with Gemma 3 4B+'s linear rope scaling of its
global layers, on 48 positions, where the scaling matters), and ``AutoModelForCausalLM`` on
Gemma 3 270M's GGUF file (its own GGUF reader and dequantiser).
"""
import dataclasses
import json
import os
import re

import jax
import numpy as np
import pytest

import sve_jax
from sve_jax.models import llama
from sve_jax.models.weights_io import WeightsError

RTOL = 1e-4  # max |ours - reference| / max |reference| over the real positions
PROJECTIONS = ('attention/q', 'attention/k', 'attention/v', 'attention/o', 'mlp/gate', 'mlp/up',
               'mlp/down')
# 6 layers: llama.cpp's fixed pattern makes the last one global, the others slide over 4 tokens.
TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, intermediate_size=48, sliding_window=4,
            query_pre_attn_scalar=24, rope_theta=1e6, rope_local_base_freq=1e4,
            rms_norm_eps=1e-6, max_position_embeddings=64)


def _rel_diff(ours, reference, real):
  ours, reference = ours[real], reference[real]
  return np.abs(ours - reference).max() / np.abs(reference).max()


def _lm_logits(config, params, batch, **module_args):
  module = llama.LlamaDecoder(config, **module_args)
  return np.asarray(jax.jit(lambda p, x: module.apply({'params': p}, x))(params, batch))


def _random_gemma3(folder, length, **config):
  """``(folder, torch model, batch)``: a random Gemma 3 of :data:`TINY` (and ``config``) saved
  as a HF folder (every weight perturbed, norms included, so each matters), and a
  right-padded batch of ``length`` and 7 tokens."""
  import torch
  import transformers
  torch.manual_seed(0)
  config = transformers.Gemma3TextConfig(**{**TINY, **config}, attn_implementation='eager')
  model = transformers.Gemma3ForCausalLM(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.3 * torch.randn_like(p))
  model.save_pretrained(folder, safe_serialization=True)
  ids = np.random.default_rng(0).integers(1, 64, (2, length)).astype(np.int32)
  mask = np.ones((2, length), np.int32)
  ids[1, 7:], mask[1, 7:] = 0, 0
  return os.fspath(folder), model, {'input_ids': ids, 'attention_mask': mask}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """A random Gemma 3 (:func:`_random_gemma3`) and a batch of 12 and 7 tokens."""
  return _random_gemma3(tmp_path_factory.mktemp('gemma3'), 12)


#: Gemma 3 4B/12B/27B's rotary scaling of their global layers.
LINEAR_8 = {'rope_type': 'linear', 'factor': 8.}


@pytest.fixture(scope='module')
def tiny_scaled(tmp_path_factory):
  """A random Gemma 3 with :data:`LINEAR_8`, and a batch of 48 and 7 tokens: at position 47
  the global layer's fastest rotation turns 47 rad unscaled and 5.9 scaled."""
  return _random_gemma3(tmp_path_factory.mktemp('gemma3_scaled'), 48, rope_scaling=LINEAR_8)


def _torch_logits(model, batch):
  import torch
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(batch['input_ids'].astype(np.int64)),
                 attention_mask=torch.from_numpy(batch['attention_mask'].astype(np.int64))
                 ).logits.float().numpy()


@pytest.mark.slow  # a torch reference
def test_tiny_gemma3_matches_transformers_past_the_sliding_window(tiny):
  folder, model, batch = tiny
  config, params = llama.load_hf(folder)
  assert config.architecture == 'gemma3' and config.layer_types == llama.gemma3_layer_types(6)
  assert list(config.layer_windows()) == [4] * 5 + [0]
  reference = _torch_logits(model, batch)
  real = batch['attention_mask'] > 0
  assert _rel_diff(_lm_logits(config, params, batch), reference, real) < RTOL
  # Independence check: the same weights read as all-global layers do differ (window < T).
  full = dataclasses.replace(config, layer_types=('full_attention',) * 6)
  assert _rel_diff(_lm_logits(full, params, batch), reference, real) > 100 * RTOL


@pytest.mark.slow  # a torch reference
def test_tiny_gemma3_with_linear_rope_scaling_matches_transformers(tiny_scaled):
  """HF scales only the global layers' rotary frequencies (positions / 8); so does ours."""
  folder, model, batch = tiny_scaled
  config, params = llama.load_hf(folder)
  assert dict(config.rope_scaling) == LINEAR_8
  reference = _torch_logits(model, batch)
  real = batch['attention_mask'] > 0
  assert _rel_diff(_lm_logits(config, params, batch), reference, real) < RTOL
  # Independence check: the same weights unscaled do differ (the positions are long enough).
  unscaled = dataclasses.replace(config, rope_scaling=())
  assert _rel_diff(_lm_logits(unscaled, params, batch), reference, real) > 100 * RTOL


@pytest.mark.slow  # several compiled decoders
def test_trunk_split_and_remat_give_the_same_logits(tiny):
  """The per-layer windows and rotary bases follow the layers into the trunk and top scans."""
  folder, _, batch = tiny
  config, params = llama.load_hf(folder)
  expected = _lm_logits(config, params, batch)
  for trunk in (1, 3, 5):
    got = _lm_logits(config, llama.split_trunk_params(params, trunk), batch,
                     num_trunk_layers=trunk)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f'trunk {trunk}')
  np.testing.assert_allclose(_lm_logits(config, params, batch, remat=True), expected, atol=1e-5)


#: A tiny SentencePiece vocabulary: pad, eos, bos, unk, then pieces in order of score.
PIECES = (['<pad>', '<eos>', '<bos>', '<unk>', '▁the', '▁th', 'th', 'he', 'in', 'on', 'er',
           '▁']
          + [chr(c) for c in range(ord('a'), ord('z') + 1)]
          + ['▁' + chr(c) for c in range(ord('a'), ord('z') + 1)][:27])


def _write_gemma3_gguf(path, config, params, **metadata):
  """``params`` as a float32 ``gemma3`` GGUF file, as llama.cpp names and stores its tensors
  (RMSNorm scales as ``1 + w``), with a SentencePiece vocabulary of 64 pieces."""
  import gguf
  c = config
  writer = gguf.GGUFWriter(os.fspath(path), 'gemma3')
  for key, value in {'block_count': c.num_hidden_layers, 'embedding_length': c.hidden_size,
                     'feed_forward_length': c.intermediate_size,
                     'attention.head_count': c.num_attention_heads,
                     'attention.head_count_kv': c.num_key_value_heads,
                     'attention.key_length': c.dim_per_head,
                     'attention.value_length': c.dim_per_head,
                     'attention.sliding_window': c.sliding_window,
                     'vocab_size': c.vocab_size}.items():
    writer.add_uint32(f'gemma3.{key}', value)
  for key, value in {'rope.freq_base': c.rope_theta,
                     'attention.layer_norm_rms_epsilon': c.rms_norm_eps, **metadata}.items():
    if value is None:  # a key the file leaves out
      continue
    add = writer.add_string if isinstance(value, str) else writer.add_float32
    add(f'gemma3.{key}', value)
  writer.add_tokenizer_model('llama')  # SentencePiece, as Gemma's
  writer.add_token_list(PIECES)
  writer.add_token_scores([-float(i) for i in range(len(PIECES))])
  writer.add_token_types([3, 3, 3, 2] + [1] * (len(PIECES) - 4))
  writer.add_bos_token_id(2)
  writer.add_eos_token_id(1)
  writer.add_unk_token_id(3)
  writer.add_pad_token_id(0)
  writer.add_add_bos_token(True)
  writer.add_add_space_prefix(False)
  state = _hf_state(config, params)
  for name, value in state.items():
    value = value + 1 if name.endswith('norm.weight') else value
    writer.add_tensor(llama.gguf_name(name, 'gemma3'), np.ascontiguousarray(value, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return os.fspath(path)


def _hf_state(config, params):
  """HF-named float32 weights of a params tree (by the decoder's own HF table)."""
  flat = {'/'.join(k): np.asarray(v) for k, v in sve_jax.tree.flatten_paths(params).items()}
  state = {'model.embed_tokens.weight': flat['embed_tokens/embedding'],
           'model.norm.weight': flat['norm/scale']}
  for hf_name, path, transpose in llama._LAYER_WEIGHTS:  # pylint: disable=protected-access
    key = 'layers/' + '/'.join(path)
    for i in range(config.num_hidden_layers) if key in flat else ():
      state[f'model.layers.{i}.{hf_name}'] = flat[key][i].T if transpose else flat[key][i]
  return state


def test_gemma3_gguf_loads_the_hf_weights_and_config(tiny, tmp_path):
  """A gemma3 GGUF file (llama.cpp's names, norms stored as 1 + w) reads back to the HF
  folder's config and weights."""
  folder, _, _ = tiny
  config, params = llama.load_hf(folder)
  contents = llama.read_gguf(_write_gemma3_gguf(tmp_path / 'tiny.gguf', config, params))
  # GGUF holds no query scalar: llama.cpp's rule gives head_dim (the tiny HF one has 24).
  assert contents.config == dataclasses.replace(config, query_pre_attn_scalar=16.)
  ids = contents.tokenizer.encode('the then').ids
  assert [contents.tokenizer.id_to_token(i) for i in ids] == ['<bos>', 'th', 'e', '▁the', 'n']
  assert contents.pad_token_id == 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-7),
               contents.params, params)


def test_gemma3_gguf_linear_rope_scaling_reads_as_the_hf_config(tiny_scaled, tmp_path):
  """llama.cpp writes HF's linear rope_scaling as rope.scaling.type and .factor."""
  folder, _, _ = tiny_scaled
  config, params = llama.load_hf(folder)
  path = _write_gemma3_gguf(tmp_path / 'scaled.gguf', config, params,
                            **{'rope.scaling.type': 'linear', 'rope.scaling.factor': 8.})
  assert llama.read_gguf(path).config == dataclasses.replace(config, query_pre_attn_scalar=16.)


@pytest.mark.parametrize('metadata, message', [
    # llama.cpp's yarn: not the linear scaling Gemma 3 uses.
    ({'rope.scaling.type': 'yarn', 'rope.scaling.factor': 8.},
     "gemma3.rope.scaling.type is 'yarn'"),
    # Gemma 3's global base (1M) is far from llama.cpp's 10k default: no silent fallback.
    ({'rope.freq_base': None}, "'gemma3.rope.freq_base'"),
], ids=['yarn_scaling', 'no_rope_base'])
def test_gemma3_gguf_rope_metadata_we_cannot_run_is_refused_naming_the_file(
    tiny, tmp_path, metadata, message):
  folder, _, _ = tiny
  config, params = llama.load_hf(folder)
  path = _write_gemma3_gguf(tmp_path / 'bad.gguf', config, params, **metadata)
  with pytest.raises(WeightsError) as error:
    llama.read_gguf(path)
  assert '\n' not in str(error.value) and path in str(error.value)
  assert message in str(error.value)


def test_gemma3_gguf_soft_capping_is_refused_naming_the_file(tiny, tmp_path):
  folder, _, _ = tiny
  config, params = llama.load_hf(folder)
  path = _write_gemma3_gguf(tmp_path / 'cap.gguf', config, params,
                            final_logit_softcapping=30.)
  with pytest.raises(WeightsError) as error:
    llama.read_gguf(path)
  assert '\n' not in str(error.value) and path in str(error.value)
  assert 'gemma3.final_logit_softcapping' in str(error.value)


def test_hf_soft_capping_is_refused_naming_the_file(tiny, tmp_path):
  folder, _, _ = tiny
  with open(os.path.join(folder, 'config.json')) as f:
    raw = {**json.load(f), 'attn_logit_softcapping': 50.}
  with pytest.raises(WeightsError, match=re.escape("config.json: key 'attn_logit_softcapping'")):
    llama.LlamaConfig.from_hf(raw)


def test_sve_decomposes_every_gemma3_projection_and_composes_back(tiny):
  folder, _, _ = tiny
  _, params = llama.load_hf(folder)
  frozen, s = sve_jax.decompose(params, rules=llama.SVE_RULES)
  layouts = sve_jax.factorize.layouts(frozen)
  assert set(layouts) == {f'layers/{p}/kernel' for p in PROJECTIONS}
  assert {'/'.join(p) for p in sve_jax.tree.flatten_paths(s)} == set(layouts)  # no biases
  shapes = {'attention/q': (32, 64), 'attention/k': (32, 32), 'attention/v': (32, 32),
            'attention/o': (64, 32), 'mlp/gate': (32, 48), 'mlp/up': (32, 48),
            'mlp/down': (48, 32)}
  for name, (d_in, d_out) in shapes.items():
    lay = layouts[f'layers/{name}/kernel']
    assert (lay.stack_shape, lay.d_in, lay.d_out) == ((6,), d_in, d_out), name
  composed = jax.jit(sve_jax.compose)(frozen, s)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5),
               composed, params)


def test_unknown_offline_preset_is_named():
  with pytest.raises(ValueError, match=r"config.model.preset='gemma-7b'.*'gemma3-270m'"):
    llama.offline_path('gemma-7b')


# --------------------------------------------------------------------------------------------
# The real Gemma 3 270M GGUF (Q4_K_M).
# --------------------------------------------------------------------------------------------

PROMPTS = ['<start_of_turn>user\nName a  colour.<end_of_turn>', 'Hi']


@pytest.fixture(scope='module')
def gemma3_270m():
  path = llama.offline_path('gemma3-270m')
  return path, llama.read_gguf(path)


@pytest.mark.slow  # loads two 270M models
def test_gemma3_270m_logits_match_transformers_on_the_same_gguf(gemma3_270m):
  import torch
  import transformers
  path, contents = gemma3_270m
  batch = llama.tokenize(contents.tokenizer, PROMPTS, 16, contents.pad_token_id)
  real = batch['attention_mask'] > 0
  assert real.sum(1).min() < real.sum(1).max()  # the shorter prompt is padded
  reference_model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
  reference = _torch_logits(reference_model, batch)
  assert _rel_diff(_lm_logits(contents.config, contents.params, batch), reference, real) < RTOL


@pytest.mark.slow  # reads the 270M GGUF
def test_gemma3_270m_config_and_tweet_verbaliser(gemma3_270m):
  """The published architecture, and configs/gemma3_tweets.py's label words start with
  distinct tokens in Gemma's vocabulary."""
  from configs import gemma3_tweets
  _, contents = gemma3_270m
  c = contents.config
  assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
          c.dim_per_head, c.intermediate_size, c.vocab_size, c.sliding_window,
          c.query_pre_attn_scalar, c.rope_theta, c.rope_local_theta, c.rms_norm_eps,
          c.tie_word_embeddings) == (18, 640, 4, 1, 256, 2048, 262144, 512, 256., 1e6, 1e4,
                                     1e-6, True)
  assert c.layer_types.count('full_attention') == 3 and c.layer_types[5] == 'full_attention'
  words = gemma3_tweets.get_config().model.verbalizer
  ids = llama.verbalizer_ids(contents.tokenizer, words)
  assert [contents.tokenizer.id_to_token(i) for i in ids] == [
      w.replace(' ', '▁') for w in words]  # each label word is one token
