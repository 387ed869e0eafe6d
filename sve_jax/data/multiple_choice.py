"""Multiple-choice questions as classification over answer letters (ARC's schema).

An example ``{'id', 'question', 'choices': {'text': [...], 'label': [...]}, 'answerKey'}``
becomes ``{'id', 'text', 'label', class_mask.KEY}``:

* ``text``: the question and its choices, lettered by position::

    Question: Which gas do plants take in?
    A. oxygen
    B. carbon dioxide
    C. helium

  (a model's prompt template then adds what asks for the answer, e.g. ``'{text}\\nAnswer:'``);
* ``label``: the position of ``answerKey`` among the choices' labels, i.e. the index of the
  letter shown before the right choice;
* ``class_mask``: ``(C,)`` bool, True for the first ``len(choices)`` letters: the class set
  is fixed (C letters, e.g. A–E), and a question with fewer choices masks the rest.

Labels are compared as letters: a label or answer given as a digit counts from '1' = 'A' (ARC
writes some questions' labels as 1–4), one given as an integer is an index into the
feature's class names (tfds's ``ClassLabel``). Choices are lettered by position, so a
question whose labels are 1, 2, 3, 4 is shown as A–D, and its answer '3' is class C.

Free of tfds: :mod:`sve_jax.data.datasets` detects the schema in a data set's features
(:func:`sve_jax.data.datasets.get_dataset`) and wraps its splits in :class:`ChoiceSource`.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sve_jax import class_mask
from sve_jax.data import pipeline
from sve_jax.data.transforms import decode_texts

#: The features of a multiple-choice example (ARC's names), and the choices' sub-features.
ID, QUESTION, CHOICES, ANSWER = 'id', 'question', 'choices', 'answerKey'
CHOICE_TEXT, CHOICE_LABEL = 'text', 'label'
#: The features of an encoded example.
TEXT, LABEL = 'text', 'label'
LETTERS = string.ascii_uppercase
_CHECK_CHUNK = 1024  # examples read at once by check_source


def to_letter(label: Any, names: Sequence[str] = ()) -> str:
  """A choice's or answer's label as a capital letter.

  Args:
    label: an integer (an index into ``names``), or text (bytes or str): a letter, or a
      digit counted from '1' = 'A'.
    names: the class names integer labels index (a ``ClassLabel``'s), e.g. ``'ABCDE'``.

  Returns:
    E.g. ``'C'`` for ``'C'``, ``'c'``, ``b'3'`` or, with names ``'ABCDE'``, ``2``.

  Raises:
    ValueError: an integer outside ``names``, or text that is neither one letter nor a
      digit 1–9.
  """
  value = label.item() if isinstance(label, np.ndarray) else label
  if isinstance(value, (int, np.integer)):
    if not 0 <= value < len(names):
      raise ValueError(f'label index {value} is not one of the {len(names)} class names '
                       f'{list(names)}')
    value = names[value]
  text = decode_texts([value])[0].strip()
  if len(text) == 1 and text in '123456789':
    return LETTERS[int(text) - 1]
  if len(text) == 1 and text.upper() in LETTERS:
    return text.upper()
  raise ValueError(f'label {text!r} is neither a letter nor a digit 1-9')


def format_question(question: str, choices: Sequence[str]) -> str:
  """``'Question: <question>\\nA. <choice 0>\\nB. <choice 1>...'``: choices lettered by
  position."""
  return '\n'.join([f'Question: {question}'] +
                   [f'{LETTERS[i]}. {choice}' for i, choice in enumerate(choices)])


def answer_class(answer: str, labels: Sequence[str]) -> int:
  """The position of letter ``answer`` among the letters ``labels``.

  Raises:
    ValueError: ``answer`` is not among ``labels``, or a label repeats (the answer would be
      ambiguous).
  """
  if len(set(labels)) != len(labels):
    raise ValueError(f'its choice labels {list(labels)} repeat')
  if answer not in labels:
    raise ValueError(f'its answer {answer!r} is not among its choice labels {list(labels)}')
  return list(labels).index(answer)


def encode_example(example: Mapping[str, Any], num_classes: int,
                   names: Sequence[str] = ()) -> dict[str, Any]:
  """One multiple-choice example as ``{'id', 'text', 'label', class_mask.KEY}`` (see the
  module docstring).

  Args:
    example: ``{'id', 'question', 'choices': {'text', 'label'}, 'answerKey'}``, as tfds
      reads it (text as bytes, labels as text or ``ClassLabel`` indices).
    num_classes: C, the letters of the class set (the first C of A, B, C, ...).
    names: the class names integer labels index (see :func:`to_letter`).

  Raises:
    ValueError: naming the example's id: more choices than classes, a label that is no
      letter, a repeated label, or an answer that is none of its choices.
  """
  example_id = decode_texts([example.get(ID, '?')])[0]
  choices = example[CHOICES]
  texts = decode_texts(list(choices[CHOICE_TEXT]))
  try:
    if len(texts) > num_classes:
      raise ValueError(f'it has {len(texts)} choices, more than the {num_classes} classes '
                       f'{list(LETTERS[:num_classes])}')
    labels = [to_letter(label, names) for label in choices[CHOICE_LABEL]]
    label = answer_class(to_letter(example[ANSWER], names), labels)
  except ValueError as e:
    raise ValueError(f'multiple-choice example {example_id!r}: {e}') from None
  mask = np.zeros(num_classes, bool)
  mask[:len(texts)] = True
  return {ID: example_id, TEXT: format_question(decode_texts([example[QUESTION]])[0], texts),
          LABEL: np.int64(label), class_mask.KEY: mask}


class ChoiceSource(pipeline.Subset):
  """A random-access view of a multiple-choice split whose examples are encoded as they are
  read (:func:`encode_example`)."""

  def __init__(self, source: pipeline.Source, num_classes: int, names: Sequence[str] = ()):
    super().__init__(source, range(len(source)))
    self.num_classes = num_classes
    self.names = tuple(names)

  def __getitem__(self, i):
    return encode_example(super().__getitem__(i), self.num_classes, self.names)

  def __getitems__(self, keys: Sequence[int]) -> list[dict[str, Any]]:
    return [encode_example(example, self.num_classes, self.names)
            for example in super().__getitems__(keys)]


def check_source(source: ChoiceSource, split: str) -> None:
  """Encodes every example of ``source`` once, so that bad data stops a run before any
  model loads.

  Raises:
    ValueError: the first bad example's error (:func:`encode_example`), prefixed by
      ``split``.
  """
  for start in range(0, len(source), _CHECK_CHUNK):
    try:
      source.__getitems__(range(start, min(start + _CHECK_CHUNK, len(source))))
    except ValueError as e:
      raise ValueError(f'{split}: {e}') from None
