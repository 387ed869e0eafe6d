"""Character-level noise on text: typos, dropped, swapped and inserted characters.

A pure, seeded stand-in for what people's typing does to text, at five severities. The
*eligible* characters of a text are its letters and digits (``str.isalnum``); spaces and
punctuation are never touched, so word boundaries stay. At severity ``s`` a corruption perturbs
``k = round(RATES[s - 1] · n)`` of the ``n`` eligible characters, chosen uniformly without
replacement by ``numpy.random.default_rng(seed)``:

* ``char_typo``: each becomes one of its QWERTY neighbours (case kept; a character off the
  keyboard becomes a random other ASCII letter); the length is unchanged and exactly ``k``
  characters differ.
* ``char_drop``: each is deleted; the text is ``k`` characters shorter.
* ``char_insert``: a QWERTY neighbour of each is inserted after it; ``k`` characters longer.
* ``char_swap``: ``round(k / 2)`` non-overlapping pairs of adjacent, different eligible
  characters are exchanged (each pair moves two characters), fewer only when the text has
  too few such pairs.

nlpaug's character augmenters were not used: they draw from the global ``random`` state, cap
changes per word and per text (``aug_char_max``, ``aug_word_max``), and re-tokenise the
text, so a severity would not be a rate.
"""
from __future__ import annotations

import string

import numpy as np

#: The corruptions, by name.
CORRUPTIONS = ('char_typo', 'char_drop', 'char_swap', 'char_insert')
#: Fraction of the eligible characters perturbed at severities 1-5.
RATES = (0.02, 0.05, 0.1, 0.15, 0.2)

_ROWS = ('1234567890', 'qwertyuiop', 'asdfghjkl', 'zxcvbnm')


def _qwerty_neighbours() -> dict[str, str]:
  """Each key's neighbours on a staggered QWERTY keyboard: left and right in its row, and
  the keys touching it in the rows above (same index and one right) and below (one left and
  same index)."""
  neighbours = {}
  for r, row in enumerate(_ROWS):
    for i, key in enumerate(row):
      near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
      if r > 0:
        near += [_ROWS[r - 1][j] for j in (i, i + 1) if j < len(_ROWS[r - 1])]
      if r + 1 < len(_ROWS):
        near += [_ROWS[r + 1][j] for j in (i - 1, i) if 0 <= j < len(_ROWS[r + 1])]
      neighbours[key] = ''.join(near)
  return neighbours


#: Each key's neighbours on a QWERTY keyboard (lower case and digits).
QWERTY_NEIGHBOURS = _qwerty_neighbours()


def rate(severity: int) -> float:
  """The fraction of eligible characters perturbed at ``severity`` (1-5)."""
  if severity not in range(1, len(RATES) + 1):
    raise ValueError(f'severity must be an integer in [1, {len(RATES)}], got {severity!r}')
  return RATES[severity - 1]


def _typo(char: str, rng: np.random.Generator) -> str:
  """A QWERTY neighbour of ``char`` in its case; off the keyboard, another ASCII letter."""
  near = QWERTY_NEIGHBOURS.get(char.lower())
  if not near:
    near = string.ascii_lowercase.replace(char.lower(), '')
  typo = near[int(rng.integers(len(near)))]
  return typo.upper() if char.isupper() else typo


def _swap_pairs(chars: list[str], eligible: np.ndarray, pairs: int,
                rng: np.random.Generator) -> list[str]:
  """Exchanges up to ``pairs`` non-overlapping adjacent pairs ``(i, i + 1)`` of different
  eligible characters, drawn in random order."""
  starts = np.flatnonzero(eligible[:-1] & eligible[1:])
  starts = [int(i) for i in starts if chars[i] != chars[i + 1]]
  taken = np.zeros(len(chars), bool)
  for i in rng.permutation(starts):
    if pairs == 0:
      break
    if not (taken[i] or taken[i + 1]):
      chars[i], chars[i + 1] = chars[i + 1], chars[i]
      taken[i] = taken[i + 1] = True
      pairs -= 1
  return chars


def corrupt_text(text: str, name: str, severity: int, seed: int) -> str:
  """``text`` with character noise ``name`` at ``severity`` (see the module docstring).

  Args:
    text: the text.
    name: one of :data:`CORRUPTIONS`.
    severity: 1-5 (:data:`RATES`).
    seed: a non-negative integer; the same seed gives the same noise.

  Returns:
    The corrupted text (``text`` itself when it has no eligible character).
  """
  if name not in CORRUPTIONS:
    raise ValueError(f'unknown text corruption {name!r}; known: {CORRUPTIONS}')
  fraction = rate(severity)
  rng = np.random.default_rng(seed)
  chars = list(text)
  eligible = np.array([c.isalnum() for c in chars], bool)
  count = round(fraction * int(eligible.sum()))
  if name == 'char_swap':
    return ''.join(_swap_pairs(chars, eligible, round(count / 2), rng))
  chosen = set(rng.choice(np.flatnonzero(eligible), count, replace=False).tolist()
               if count else ())
  out = []
  for i, char in enumerate(chars):
    if i not in chosen:
      out.append(char)
    elif name == 'char_typo':
      out.append(_typo(char, rng))
    elif name == 'char_insert':
      out += [char, _typo(char, rng)]
    # char_drop: nothing
  return ''.join(out)
