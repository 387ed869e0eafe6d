"""Tiny random Llama-family checkpoints on disk: a GGUF file as llama.cpp writes one, and a HF
folder (sharded safetensors, config.json, tokenizer.json) as transformers saves one.

Both hold the same weights, so loaders can be checked against each other and against
transformers, offline and in seconds.
"""
import json
import os

import numpy as np
import tokenizers

# d 32, 2 layers, 4 query heads sharing 2 KV heads of 8, FFN 64: rows are multiples of 32, the
# block size of GGUF's Q8_0 / Q4_1.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, rms_norm_eps=1e-5, rope_theta=10000.)
SPECIAL = ('<|endoftext|>', '<|im_start|>')
MERGES = ('Ġ t', 'h e', 'Ġt he', 'Ġ a', 'o n', 'i n', 'Ġ p', 'o s', 'Ġp os', 'Ġ n', 'e g',
          'Ġn eg', 'a t', 'Ġ s', 'e n', 'Ġ 1')


def vocabulary() -> list[str]:
  """Special tokens, GPT-2's 256 byte symbols, then one token per merge."""
  alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
  return list(SPECIAL) + alphabet + [m.replace(' ', '') for m in MERGES]


def random_hf_state(seed: int = 0, vocab_size: int | None = None, attention_bias: bool = False,
                    tie: bool = True) -> dict[str, np.ndarray]:
  """HF-named float32 weights of a tiny decoder (norms near 1, projections ~N(0, 0.2²))."""
  rng = np.random.default_rng(seed)
  vocab = vocab_size or len(vocabulary())
  d, ffn = TINY['hidden_size'], TINY['intermediate_size']
  hd = d // TINY['num_attention_heads']
  q, kv = TINY['num_attention_heads'] * hd, TINY['num_key_value_heads'] * hd
  normal = lambda *shape: (0.2 * rng.standard_normal(shape)).astype(np.float32)
  state = {'model.embed_tokens.weight': normal(vocab, d) * 5,
           'model.norm.weight': 1 + normal(d)}
  for i in range(TINY['num_hidden_layers']):
    p = f'model.layers.{i}.'
    state.update({p + 'input_layernorm.weight': 1 + normal(d),
                  p + 'post_attention_layernorm.weight': 1 + normal(d),
                  p + 'self_attn.q_proj.weight': normal(q, d),
                  p + 'self_attn.k_proj.weight': normal(kv, d),
                  p + 'self_attn.v_proj.weight': normal(kv, d),
                  p + 'self_attn.o_proj.weight': normal(d, q),
                  p + 'mlp.gate_proj.weight': normal(ffn, d),
                  p + 'mlp.up_proj.weight': normal(ffn, d),
                  p + 'mlp.down_proj.weight': normal(d, ffn)})
    if attention_bias:
      state.update({p + 'self_attn.q_proj.bias': normal(q), p + 'self_attn.k_proj.bias': normal(kv),
                    p + 'self_attn.v_proj.bias': normal(kv)})
  if not tie:
    state['lm_head.weight'] = normal(vocab, d)
  return state


def write_gguf(path, state: dict[str, np.ndarray], quantize: bool = True,
               arch: str = 'llama', override_types: dict | None = None) -> str:
  """Writes ``state`` as llama.cpp would: q/k rows permuted (``llama``), 2-D weights in Q8_0
  (embedding) and Q4_1 (the rest) when ``quantize``, norms in float32, the tiny byte-level
  vocabulary with its merges. ``override_types``: ``{tensor name: (raw uint8 bytes, shape,
  GGMLQuantizationType)}`` written instead (for unsupported types)."""
  import gguf
  from sve_jax.models import llama

  d = TINY['hidden_size']
  writer = gguf.GGUFWriter(os.fspath(path), arch)
  writer.add_uint32(f'{arch}.block_count', TINY['num_hidden_layers'])
  writer.add_uint32(f'{arch}.context_length', 256)
  writer.add_uint32(f'{arch}.embedding_length', d)
  writer.add_uint32(f'{arch}.feed_forward_length', TINY['intermediate_size'])
  writer.add_uint32(f'{arch}.attention.head_count', TINY['num_attention_heads'])
  writer.add_uint32(f'{arch}.attention.head_count_kv', TINY['num_key_value_heads'])
  writer.add_float32(f'{arch}.rope.freq_base', TINY['rope_theta'])
  writer.add_float32(f'{arch}.attention.layer_norm_rms_epsilon', TINY['rms_norm_eps'])
  writer.add_uint32(f'{arch}.vocab_size', len(state['model.embed_tokens.weight']))
  writer.add_uint32(f'{arch}.rope.dimension_count', d // TINY['num_attention_heads'])
  writer.add_tokenizer_model('gpt2')
  writer.add_tokenizer_pre('smollm')
  tokens = vocabulary()
  writer.add_token_list(tokens)
  writer.add_token_types([3 if t in SPECIAL else 1 for t in tokens])
  writer.add_token_merges(list(MERGES))
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(0)
  writer.add_pad_token_id(0)
  writer.add_add_bos_token(False)
  override_types = override_types or {}
  for hf_name, value in state.items():
    name = llama.gguf_name(hf_name)
    if name in override_types:
      raw, shape, kind = override_types[name]
      writer.add_tensor(name, raw, raw_shape=shape, raw_dtype=kind)
      continue
    if arch == 'llama' and hf_name.endswith(('q_proj.weight', 'k_proj.weight')):
      heads = TINY['num_attention_heads' if 'q_proj' in hf_name else 'num_key_value_heads']
      half = value.shape[0] // heads // 2
      value = value.reshape(heads, 2, half, -1).swapaxes(1, 2).reshape(value.shape)
    if quantize and value.ndim == 2:
      kind = (gguf.GGMLQuantizationType.Q8_0 if 'embd' in name
              else gguf.GGMLQuantizationType.Q4_1)
      writer.add_tensor(name, gguf.quants.quantize(value, kind), raw_dtype=kind)
    else:
      writer.add_tensor(name, np.ascontiguousarray(value, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return os.fspath(path)


def write_hf_folder(folder, state: dict[str, np.ndarray], tokenizer: tokenizers.Tokenizer,
                    model_type: str = 'llama', tie: bool = True, shards: int = 2,
                    **config) -> str:
  """A HF folder: ``config.json``, ``tokenizer.json`` and ``state`` in ``shards`` safetensors
  shards with their ``model.safetensors.index.json`` (one ``model.safetensors`` if 1)."""
  from safetensors.numpy import save_file
  os.makedirs(folder, exist_ok=True)
  raw = {'model_type': model_type, 'architectures': ['LlamaForCausalLM'], 'hidden_act': 'silu',
         'vocab_size': len(state['model.embed_tokens.weight']), 'tie_word_embeddings': tie,
         'max_position_embeddings': 256, **TINY, **config}
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump(raw, f)
  tokenizer.save(os.path.join(folder, 'tokenizer.json'))
  with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as f:
    json.dump({'eos_token': '<|endoftext|>', 'pad_token': '<|endoftext|>'}, f)
  names = sorted(state)
  if shards == 1:
    save_file({k: state[k] for k in names}, os.path.join(folder, 'model.safetensors'))
    return os.fspath(folder)
  weight_map = {}
  for s in range(shards):
    shard = f'model-{s + 1:05d}-of-{shards:05d}.safetensors'
    part = names[s::shards]
    save_file({k: state[k] for k in part}, os.path.join(folder, shard))
    weight_map.update({k: shard for k in part})
  with open(os.path.join(folder, 'model.safetensors.index.json'), 'w') as f:
    json.dump({'metadata': {}, 'weight_map': weight_map}, f)
  return os.fspath(folder)
