"""Out-of-distribution text: prose sentences from Python standard-library docstrings."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Iterable, Sequence

# Modules whose docstrings form the out-of-distribution text set: technical
# English about programming, far from tweets and movie reviews.
OOD_TEXT_MODULES = (
    'argparse', 'asyncio', 'base64', 'bisect', 'calendar', 'collections',
    'configparser', 'contextlib', 'csv', 'dataclasses', 'datetime', 'decimal',
    'difflib', 'email.message', 'enum', 'fractions', 'ftplib', 'functools',
    'gzip', 'heapq', 'http.client', 'imaplib', 'inspect', 'ipaddress',
    'itertools', 'json', 'logging', 'mailbox', 'optparse', 'os', 'pathlib',
    'pickle', 'pydoc', 'queue', 'random', 're', 'shutil', 'smtplib', 'socket',
    'sqlite3', 'statistics', 'string', 'subprocess', 'tarfile', 'tempfile',
    'textwrap', 'threading', 'typing', 'unittest',
    'urllib.parse', 'urllib.request', 'uuid', 'warnings', 'xml.dom.minidom',
    'zipfile',
)
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z])')
_CODE_LIKE = re.compile(r'>>>|\.\.\.|[{}\[\]=_`|\\<>@#$%*]|\w\(|::')


def docstring_sentences(module_names: Sequence[str] = OOD_TEXT_MODULES,
                        *,
                        min_words: int = 6,
                        max_words: int = 40,
                        max_sentences: int | None = 2000) -> list[str]:
  """Prose sentences from the docstrings of standard-library modules.

  Walks each module, its public functions and classes, and the public methods
  of those classes (members sorted by name, so the order is fixed for a given
  Python version). Docstrings are split into paragraphs and sentences; a
  sentence is kept if it has `min_words..max_words` words, starts with a
  capital letter, ends with a full stop and has no code-like characters.
  Duplicates are dropped, keeping the first occurrence. The default modules
  are pure Python, so the set does not depend on optional system libraries.

  Returns:
    At most `max_sentences` sentences, in walk order.
  """
  sentences, seen = [], set()
  with warnings.catch_warnings():
    # Some members (typing.io, typing.re) warn when their docstring is read.
    warnings.simplefilter('ignore', DeprecationWarning)
    docstrings = list(_docstrings(module_names))
  for docstring in docstrings:
    for paragraph in re.split(r'\n\s*\n', docstring):
      text = ' '.join(paragraph.split())
      for sentence in _SENTENCE_END.split(text):
        if (min_words <= len(sentence.split()) <= max_words
            and sentence[0].isupper() and sentence.endswith('.')
            and not _CODE_LIKE.search(sentence) and sentence not in seen):
          seen.add(sentence)
          sentences.append(sentence)
          if max_sentences is not None and len(sentences) == max_sentences:
            return sentences
  return sentences


def _docstrings(module_names: Sequence[str]) -> Iterable[str]:
  """Yields the docstrings of modules, their public members and methods."""
  for module_name in module_names:
    module = importlib.import_module(module_name)
    yield inspect.getdoc(module) or ''
    for _, member in _public_members(module, module.__name__):
      yield inspect.getdoc(member) or ''
      if inspect.isclass(member):
        for _, method in _public_members(member, module.__name__):
          yield inspect.getdoc(method) or ''


def _public_members(owner, module_name: str):
  """Public functions and classes defined in `module_name`, sorted by name."""
  for name, member in sorted(vars(owner).items()):
    if (not name.startswith('_')
        and (inspect.isfunction(member) or inspect.isclass(member))
        and getattr(member, '__module__', None) == module_name):
      yield name, member
