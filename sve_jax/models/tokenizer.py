"""WordPiece tokenisation for BERT-family checkpoint folders, offline.

:func:`load_tokenizer` reads ``tokenizer.json`` (the fast-tokenizer file Hugging Face folders
ship) and falls back to ``vocab.txt`` + ``tokenizer_config.json``. :func:`tokenize` turns
texts into fixed-length ``np.int32`` arrays a BERT forward pass takes.

The length is always explicit: a shipped ``tokenizer.json`` may carry its own padding and
truncation settings (all-MiniLM-L6-v2's pads and truncates to 128), which :func:`tokenize`
overrides on every call.
"""
from __future__ import annotations

import json
import os
from typing import Sequence, Union

import numpy as np
import tokenizers
import tokenizers.models

from sve_jax.models.weights_io import WeightsError

#: ``tokenizers.Tokenizer`` (from tokenizer.json) or ``BertWordPieceTokenizer`` (from
#: vocab.txt); both offer ``encode_batch``, ``enable_padding``, ``enable_truncation`` and
#: ``token_to_id``.
Tokenizer = Union[tokenizers.Tokenizer, tokenizers.BertWordPieceTokenizer]

PAD_TOKEN = '[PAD]'


def load_tokenizer(folder: str | os.PathLike) -> Tokenizer:
  """Loads the tokenizer of a Hugging Face BERT folder.

  Args:
    folder: holds ``tokenizer.json``, or else ``vocab.txt`` (with an optional
      ``tokenizer_config.json`` whose ``do_lower_case`` (default true),
      ``tokenize_chinese_chars`` (default true) and ``strip_accents`` (default: follow
      lowercasing) configure BERT's normaliser as the slow ``BertTokenizer`` would).

  Returns:
    A tokenizer for :func:`tokenize`.

  Raises:
    WeightsError: neither file exists, or the file cannot be parsed (names the file).
  """
  folder = os.fspath(folder)
  json_path = os.path.join(folder, 'tokenizer.json')
  vocab_path = os.path.join(folder, 'vocab.txt')
  if os.path.isfile(json_path):
    try:
      return tokenizers.Tokenizer.from_file(json_path)
    except Exception as e:  # The Rust parser raises a bare Exception.
      raise WeightsError(f'cannot parse tokenizer file {json_path}: {e}') from e
  if os.path.isfile(vocab_path):
    options = _read_tokenizer_config(os.path.join(folder, 'tokenizer_config.json'))
    return tokenizers.BertWordPieceTokenizer(
        tokenizers.models.WordPiece.read_file(vocab_path),  # a path here is deprecated
        lowercase=bool(options.get('do_lower_case', True)),
        handle_chinese_chars=bool(options.get('tokenize_chinese_chars', True)),
        strip_accents=options.get('strip_accents'))
  raise WeightsError(
      f'no tokenizer in {folder}: expected tokenizer.json or vocab.txt (a Hugging Face '
      'BERT folder saved with its tokenizer)')


def _read_tokenizer_config(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WeightsError(f'cannot read tokenizer config {path}: {e}') from e


def tokenize(tokenizer: Tokenizer, texts: Sequence[str],
             max_length: int) -> dict[str, np.ndarray]:
  """Tokenises ``texts`` into padded, truncated ``(len(texts), max_length)`` int32 arrays.

  Each row is ``[CLS] tokens [SEP] [PAD]...``; texts longer than ``max_length - 2``
  wordpieces are cut at the end (``[SEP]`` is kept). Sets the tokenizer's own padding and
  truncation to ``max_length`` (overriding whatever its file said).

  Args:
    tokenizer: from :func:`load_tokenizer`.
    texts: strings (not pre-tokenised).
    max_length: the fixed output length, at least 2 (room for ``[CLS]`` and ``[SEP]``).

  Returns:
    ``{'input_ids', 'attention_mask', 'token_type_ids'}``, each ``np.int32`` of shape
    ``(len(texts), max_length)``; ``attention_mask`` is 1 on real tokens, 0 on padding.

  Raises:
    ValueError: ``max_length < 2``, ``texts`` is a bare string, or the vocabulary has no
      ``[PAD]`` token.
  """
  if isinstance(texts, str):
    raise ValueError('tokenize expects a sequence of texts, got a single str; wrap it in a '
                     'list')
  if max_length < 2:
    raise ValueError(f'max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}')
  pad_id = tokenizer.token_to_id(PAD_TOKEN)
  if pad_id is None:
    raise ValueError(f'the tokenizer vocabulary has no {PAD_TOKEN} token')
  tokenizer.enable_truncation(max_length=max_length)
  tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token=PAD_TOKEN,
                           pad_type_id=0)
  encodings = tokenizer.encode_batch(list(texts))

  def stack(field: str) -> np.ndarray:
    return np.asarray([getattr(e, field) for e in encodings],
                      np.int32).reshape(len(encodings), max_length)

  return {'input_ids': stack('ids'), 'attention_mask': stack('attention_mask'),
          'token_type_ids': stack('type_ids')}
