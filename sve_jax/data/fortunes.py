"""Near-OOD text: short informal English from the `fortune` cookie files.

Debian's `fortunes-min` package (BSD licence, `scripts/setup.sh` installs it) ships the
`fortunes` file: 431 one- to four-line quips, predictions and quotations. They are informal
English like tweets, but carry no sentiment label: closer to the tweets than the
standard-library docstrings of :mod:`sve_jax.data.stdlib_text`, hence a near-OOD set.

The files use the `strfile` format: entries separated by lines holding only ``%``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

#: Where Debian's fortune packages put their cookie files.
FORTUNES_DIR = '/usr/share/games/fortunes'
#: The `fortunes-min` file of short informal one-liners.
FORTUNE_FILES = ('fortunes',)


def read_fortune_file(path: str | os.PathLike) -> list[str]:
  """The entries of one `strfile`-format cookie file, in file order.

  Entries are separated by lines holding only ``%``; each entry's whitespace (line breaks,
  tabs, repeated spaces) is collapsed to single spaces, and empty entries are dropped.

  Raises:
    FileNotFoundError: ``path`` does not exist (the message names the Debian package).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no fortune file; install Debian\'s fortunes-min '
                            '(apt-get install fortunes-min, or bash scripts/setup.sh)')
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().splitlines()
  entries, current = [], []
  for line in lines + ['%']:
    if line.strip() == '%':
      text = ' '.join(' '.join(current).split())
      if text:
        entries.append(text)
      current = []
    else:
      current.append(line)
  return entries


def fortune_texts(directory: str = FORTUNES_DIR,
                  files: Sequence[str] = FORTUNE_FILES,
                  *,
                  min_words: int = 3,
                  max_words: int = 40) -> list[str]:
  """The entries of ``files`` under ``directory`` with ``min_words..max_words`` words.

  Files are read in the given order (:func:`read_fortune_file`); duplicates are dropped,
  keeping the first occurrence.
  """
  texts, seen = [], set()
  for name in files:
    for text in read_fortune_file(os.path.join(directory, name)):
      if min_words <= len(text.split()) <= max_words and text not in seen:
        seen.add(text)
        texts.append(text)
  return texts
