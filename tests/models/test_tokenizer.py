"""WordPiece tokenisation (`sve_jax.models.tokenizer`): the same ids as transformers' pure-Python
``BertTokenizer`` on ``vocab.txt``, fixed-length rows, and errors that name the file."""
import json
import os
import shutil

import numpy as np
import pytest
import transformers

from sve_jax.models import bert
from sve_jax.models.tokenizer import load_tokenizer
from sve_jax.models.tokenizer import tokenize
from sve_jax.models.weights_io import WeightsError

MAX_LENGTH = 48
SENTENCES = [
    'The movie was absolutely wonderful.',
    'Hi',
    '',
    'Café crème brûlée à Noël, naïve façade, jalapeño.',
    'I love pizza 🍕🍕 and sunny days ☀️!',
    '我喜欢自然语言处理。',
    'Привет, как дела?',
    'Numbers like 3.14159, 2,718 and 1e-9 appear here.',
    'E-mail me at someone@example.com or visit https://example.org/path?q=1.',
    "Don't, won't, can't; isn't it?",
    '   leading and trailing spaces   ',
    'Tabs\tand\nnewlines inside.',
    ' '.join(['This sentence is long enough to be truncated at the chosen maximum length.'] * 4),
]


@pytest.fixture(scope='module')
def minilm_folder():
  return bert.offline_minilm_path()


def test_tokenize_matches_transformers_python_tokenizer(minilm_folder, tmp_path):
  reference = transformers.BertTokenizer(os.path.join(minilm_folder, 'vocab.txt'),
                                         do_lower_case=True)(
      SENTENCES, padding='max_length', truncation=True, max_length=MAX_LENGTH)
  # tokenizer.json, and the vocab.txt fallback when tokenizer.json is absent.
  for name in ('vocab.txt', 'tokenizer_config.json'):
    shutil.copy(os.path.join(minilm_folder, name), tmp_path / name)
  for folder in (minilm_folder, tmp_path):
    ours = tokenize(load_tokenizer(folder), SENTENCES, MAX_LENGTH)
    for key in ('input_ids', 'attention_mask', 'token_type_ids'):
      assert ours[key].dtype == np.int32 and ours[key].shape == (len(SENTENCES), MAX_LENGTH)
      np.testing.assert_array_equal(ours[key], np.asarray(reference[key]), err_msg=key)


@pytest.mark.parametrize('max_length', [2, 5, 200])
def test_rows_are_cls_tokens_sep_then_padding(minilm_folder, max_length):
  tokenizer = load_tokenizer(minilm_folder)
  cls, sep, pad = (tokenizer.token_to_id(t) for t in ('[CLS]', '[SEP]', '[PAD]'))
  out = tokenize(tokenizer, SENTENCES, max_length)  # the file's own length (128) is overridden
  for ids, mask in zip(out['input_ids'], out['attention_mask']):
    real = int(mask.sum())
    assert 2 <= real <= max_length and (mask[:real] == 1).all() and (mask[real:] == 0).all()
    assert ids[0] == cls and ids[real - 1] == sep and (ids[real:] == pad).all()
  assert (out['token_type_ids'] == 0).all()


def test_errors_name_the_file(minilm_folder, tmp_path):
  with pytest.raises(WeightsError, match=r'no tokenizer in .*: expected tokenizer\.json or '
                                         r'vocab\.txt'):
    load_tokenizer(tmp_path)
  (tmp_path / 'tokenizer.json').write_text('{not json')
  with pytest.raises(WeightsError, match=r'cannot parse tokenizer file .*tokenizer\.json'):
    load_tokenizer(tmp_path)
  os.remove(tmp_path / 'tokenizer.json')
  shutil.copy(os.path.join(minilm_folder, 'vocab.txt'), tmp_path / 'vocab.txt')
  (tmp_path / 'tokenizer_config.json').write_text('{"do_lower_case": ')
  with pytest.raises(WeightsError, match=r'cannot read tokenizer config .*tokenizer_config'):
    load_tokenizer(tmp_path)
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'do_lower_case': False}))
  cased = tokenize(load_tokenizer(tmp_path), ['Hello'], 8)['input_ids']
  lower = tokenize(load_tokenizer(minilm_folder), ['Hello'], 8)['input_ids']
  assert not np.array_equal(cased, lower)  # the option reaches the normaliser


def test_bad_arguments():
  tokenizer = load_tokenizer(bert.offline_minilm_path())
  with pytest.raises(ValueError, match='a single str'):
    tokenize(tokenizer, 'one text', 8)
  with pytest.raises(ValueError, match=r'max_length must be >= 2'):
    tokenize(tokenizer, ['a'], 1)
