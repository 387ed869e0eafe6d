"""Class labels of local files: their vocabulary, their indices, a check on the training split."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def check_train_has_every_class(splits: Mapping[str, tuple[str, np.ndarray, np.ndarray]],
                                names: Sequence[str]) -> None:
  """Raises if a class has no example in the `train` split (nothing to learn it from).

  Args:
    splits: `{split: (source file or folder, label indices, row indices in that
      source)}`; without a `train` split nothing is checked.
    names: the class names, by label index.

  Raises:
    ValueError: naming each such class and where its examples are (split, source
      and rows), e.g. a label that occurs only in the test file.
  """
  if 'train' not in splits:
    return
  in_train = set(splits['train'][1].tolist())
  problems = []
  for index, name in enumerate(names):
    if index in in_train:
      continue
    where = [f'{split} ({source}, rows {rows[labels == index][:5].tolist()})'
             for split, (source, labels, rows) in splits.items()
             if (labels == index).any()]
    problems.append(f'{name!r} ' + (f'only in {"; ".join(where)}' if where
                                     else 'has no example at all'))
  if problems:
    raise ValueError('class(es) without a training example after the split: '
                     + ', '.join(problems) + '. Add training examples, drop those rows '
                     '(or set `label_names`), or change `split_seed` / `split_fractions`.')


def check_at_least_two_classes(names: Sequence[str], source: str) -> None:
  """Raises unless there are two classes or more: one class leaves nothing to classify (a
  model would reach accuracy 1.0 by construction).

  Raises:
    ValueError: naming `source` and the one class found.
  """
  if len(names) < 2:
    raise ValueError(f'{source}: the labels hold {len(names)} class(es) {list(names)}; a '
                     'classifier needs at least two. Is the label column the right one?')


def label_vocabulary(labels: Iterable[str]) -> tuple[str, ...]:
  """Sorted distinct labels: numerically if all are integers, else as text.

  Numeric order keeps integer labels in place ('2' before '10'), so that a
  file labelled 0..K-1 maps each label to itself.
  """
  distinct = set(labels)
  if all(re.fullmatch(r'[+-]?\d+', label) for label in distinct):
    return tuple(sorted(distinct, key=int))
  return tuple(sorted(distinct))


def encode_labels(labels: Sequence[str], names: Sequence[str],
                  *, source: str) -> np.ndarray:
  """Maps label strings to their int64 index in `names`.

  Raises:
    ValueError: naming `source` if a label is not in `names`.
  """
  index = {name: i for i, name in enumerate(names)}
  unknown = sorted(set(labels) - set(index))
  if unknown:
    raise ValueError(f'{source}: label(s) {unknown[:10]} are not in the label '
                     f'names {list(names)}.')
  return np.array([index[label] for label in labels], dtype=np.int64)
