"""Character noise (`sve_jax.data.text_noise`): on a long text, each corruption perturbs the
severity's fraction of letters and digits, counted by brute force; seeded; spaces kept."""
import collections

import numpy as np
import pytest

from sve_jax.data import corruptions
from sve_jax.data import text_noise

TEXT = ('The quick brown fox jumps over the lazy dog; 1,234 sphinxes of black quartz judge '
        'my vow. ') * 60
ELIGIBLE = sum(c.isalnum() for c in TEXT)


def _expected(severity):
  return round(text_noise.RATES[severity - 1] * ELIGIBLE)


def test_one_rate_per_severity_growing():
  assert len(text_noise.RATES) == len(corruptions.SEVERITIES)
  assert np.all(np.diff(text_noise.RATES) > 0)


@pytest.mark.parametrize('severity', corruptions.SEVERITIES)
def test_typos_replace_the_rate_of_characters_by_keyboard_neighbours(severity):
  out = text_noise.corrupt_text(TEXT, 'char_typo', severity, seed=0)
  assert len(out) == len(TEXT)
  changed = [(a, b) for a, b in zip(TEXT, out) if a != b]
  assert len(changed) == _expected(severity)
  assert all(a.isalnum() and b.isalnum() for a, b in changed)
  assert all(b.isdigit() or a.isupper() == b.isupper() for a, b in changed)  # case kept
  assert all(b.lower() in text_noise.QWERTY_NEIGHBOURS[a.lower()] for a, b in changed)


@pytest.mark.parametrize('severity', corruptions.SEVERITIES)
def test_drops_remove_the_rate_of_characters_and_nothing_else(severity):
  out = text_noise.corrupt_text(TEXT, 'char_drop', severity, seed=0)
  assert len(TEXT) - len(out) == _expected(severity)
  removed = collections.Counter(TEXT) - collections.Counter(out)
  assert all(c.isalnum() for c in removed) and out.count(' ') == TEXT.count(' ')
  it = iter(TEXT)
  assert all(c in it for c in out)  # a subsequence of the text


@pytest.mark.parametrize('severity', corruptions.SEVERITIES)
def test_inserts_add_the_rate_of_characters(severity):
  out = text_noise.corrupt_text(TEXT, 'char_insert', severity, seed=0)
  assert len(out) - len(TEXT) == _expected(severity)
  it = iter(out)
  assert all(c in it for c in TEXT)  # the text is a subsequence of the result
  assert out.count(' ') == TEXT.count(' ')


@pytest.mark.parametrize('severity', corruptions.SEVERITIES)
def test_swaps_exchange_adjacent_pairs_moving_the_rate_of_characters(severity):
  out = text_noise.corrupt_text(TEXT, 'char_swap', severity, seed=0)
  assert sorted(out) == sorted(TEXT)
  moved = [i for i, (a, b) in enumerate(zip(TEXT, out)) if a != b]
  assert len(moved) == 2 * round(_expected(severity) / 2)
  for i, j in zip(moved[::2], moved[1::2]):
    assert j == i + 1 and (out[i], out[j]) == (TEXT[j], TEXT[i])


@pytest.mark.parametrize('name', text_noise.CORRUPTIONS)
def test_seeded_and_different_across_seeds(name):
  a = text_noise.corrupt_text(TEXT, name, 3, seed=1)
  assert a == text_noise.corrupt_text(TEXT, name, 3, seed=1)
  assert a != text_noise.corrupt_text(TEXT, name, 3, seed=2)


def test_short_and_empty_texts():
  assert text_noise.corrupt_text('', 'char_typo', 5, 0) == ''
  assert text_noise.corrupt_text('!!! ...', 'char_drop', 5, 0) == '!!! ...'
  assert text_noise.corrupt_text('ok', 'char_typo', 1, 0) == 'ok'  # round(0.02 · 2) = 0
  assert text_noise.corrupt_text('Ünïcödé', 'char_typo', 5, 0) != 'Ünïcödé'


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match='unknown text corruption'):
    text_noise.corrupt_text(TEXT, 'gaussian_noise', 1, 0)
  with pytest.raises(ValueError, match='severity'):
    text_noise.corrupt_text(TEXT, 'char_drop', 0, 0)


def test_keyboard_neighbours_are_the_keys_around():
  assert set(text_noise.QWERTY_NEIGHBOURS['g']) == set('fhtyvb')
  assert set(text_noise.QWERTY_NEIGHBOURS['q']) == set('wa12')
  assert set(text_noise.QWERTY_NEIGHBOURS['m']) == set('njk')
  assert set(text_noise.QWERTY_NEIGHBOURS['5']) == set('46rt')
