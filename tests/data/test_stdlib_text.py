"""Out-of-distribution sentences (`sve_jax.data.stdlib_text`): prose taken word for word from
the standard library's docstrings, filtered as documented."""
import importlib
import inspect

from sve_jax.data import stdlib_text

MODULES = ('textwrap', 'bisect', 'heapq', 'shlex')


def test_sentences_come_word_for_word_from_the_modules_sources():
  sentences = stdlib_text.docstring_sentences(MODULES, max_sentences=None)
  assert len(sentences) > 20 and len(set(sentences)) == len(sentences)
  # A docstring's words appear in its source file in the same order, whatever the wrapping.
  sources = ' '.join(' '.join(inspect.getsource(importlib.import_module(m)).split())
                     for m in MODULES)
  for sentence in sentences:
    assert sentence in sources, sentence
    assert 6 <= len(sentence.split()) <= 40
    assert sentence[0].isupper() and sentence.endswith('.')
    assert not set('{}[]=_`|\\<>@#$%*') & set(sentence)


def test_limits_cut_the_same_walk():
  every = stdlib_text.docstring_sentences(MODULES, max_sentences=None)
  assert stdlib_text.docstring_sentences(MODULES, max_sentences=7) == every[:7]
  short = stdlib_text.docstring_sentences(MODULES, max_words=10, max_sentences=None)
  assert short == [s for s in every if len(s.split()) <= 10]


def test_the_default_modules_import_everywhere():
  for name in stdlib_text.OOD_TEXT_MODULES:
    importlib.import_module(name)
