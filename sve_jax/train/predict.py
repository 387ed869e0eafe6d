"""Predictions with uncertainty on new data: ``train.py --mode=predict``.

A trained run scores a user's file: each input row gets the ensemble's prediction, its
confidence and class probabilities, the predictive entropy, the members' mutual information
and votes, and a ``review`` flag for rows below a confidence threshold. The threshold is
chosen on the run's validation split, for a target accuracy of the answered rows or a target
coverage (:func:`choose_threshold`).

Inputs stream in chunks (:func:`read_chunks`), so a file of any length needs one chunk in
memory; the output is written to a temporary file and renamed at the end, so a failure never
leaves a half-written file behind (:func:`write_predictions`).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from sve_jax.data import images
from sve_jax.data import tables
from sve_jax.eval import metrics
from sve_jax.eval import selective

#: Rows scored per call of the model (a multiple of the evaluation batch is best).
CHUNK_ROWS = 512
IMAGE_PATH_COLUMN = 'path'


class PredictError(ValueError):
  """A user's input to ``--mode=predict`` is unusable (names the file, line or option)."""


@dataclasses.dataclass(frozen=True)
class Threshold:
  """The confidence below which a row is flagged for review, and how it was chosen.

  Attributes:
    confidence: rows with ensemble confidence (max probability) below it are flagged.
    target: ``'accuracy'`` or ``'coverage'``.
    target_value: the requested accuracy of answered rows, or fraction answered.
    validation_accuracy: accuracy of the validation rows at or above the threshold.
    validation_coverage: fraction of validation rows at or above it.
  """
  confidence: float
  target: str
  target_value: float
  validation_accuracy: float
  validation_coverage: float


def choose_threshold(val_logits: np.ndarray, val_labels: np.ndarray, *, mode: str,
                     target_accuracy: float | None = None,
                     target_coverage: float | None = None) -> Threshold:
  """The review threshold on max probability, chosen on validation predictions.

  Exactly one target: ``target_accuracy`` keeps the largest validation set whose accuracy
  reaches it; ``target_coverage`` keeps at least that fraction of validation rows.

  Raises:
    PredictError: both or neither target, or one outside (0, 1].
  """
  if (target_accuracy is None) == (target_coverage is None):
    raise PredictError('give exactly one of --target_accuracy and --target_coverage')
  target, value = (('accuracy', target_accuracy) if target_accuracy is not None
                   else ('coverage', target_coverage))
  if not 0 < value <= 1:
    raise PredictError(f'--target_{target}={value} must be in (0, 1]')
  probs = np.asarray(metrics.ensemble_probs(val_logits, mode))
  confidence = probs.max(-1)
  correct = probs.argmax(-1) == np.asarray(val_labels)
  curve = selective.risk_coverage(-confidence, correct)
  if target == 'accuracy':
    uncertainty = selective.threshold_for_accuracy(curve, value)
  else:
    uncertainty = selective.threshold_for_coverage(curve, value)
  threshold = -uncertainty                       # +inf: no validation row reaches the target
  kept = confidence >= threshold
  return Threshold(confidence=float(threshold), target=target, target_value=float(value),
                   validation_accuracy=float(correct[kept].mean()) if kept.any() else math.nan,
                   validation_coverage=float(kept.mean()))


def prediction_columns(member_logits: np.ndarray, class_names: Sequence[str], *, mode: str,
                       threshold: float) -> dict[str, list[Any]]:
  """The output columns of a chunk, from its member logits ``(M, N, C)``.

  Returns:
    ``prediction``, ``confidence``, ``p_<class>`` per class, ``entropy``,
    ``mutual_information``, ``votes`` (each member's class, ``|``-joined) and ``review``
    (confidence below ``threshold``), each a list of ``N`` values.
  """
  member_logits = np.asarray(member_logits)
  probs = np.asarray(metrics.ensemble_probs(member_logits, mode), np.float64)
  scores = {k: np.asarray(v, np.float64)
            for k, v in metrics.uncertainty_scores(member_logits, mode).items()}
  confidence = probs.max(-1)
  votes = member_logits.argmax(-1).T               # (N, M)
  columns = {'prediction': [class_names[i] for i in probs.argmax(-1)],
             'confidence': confidence.tolist()}
  for c, name in enumerate(class_names):
    columns[f'p_{name}'] = probs[:, c].tolist()
  columns['entropy'] = scores['entropy'].tolist()
  columns['mutual_information'] = scores['mi'].tolist()
  columns['votes'] = ['|'.join(class_names[v] for v in row) for row in votes]
  columns['review'] = (confidence < threshold).tolist()
  return columns


def _table_chunks(path: str, input_column: str, label_column: str | None,
                  encoding: str, chunk_rows: int) -> Iterator[list[dict[str, str]]]:
  """Rows of a CSV, TSV or JSON-lines file in chunks, every column kept, checked per line."""
  kind = tables.TABLE_SUFFIXES[os.path.splitext(path)[1].lower()]
  chunk = []
  with tables.table_lines(path, encoding, header_lines=int(kind != 'jsonl')) as lines:
    for line, row in tables.table_rows(lines, kind, path):
      if input_column not in row:
        raise PredictError(f'{path}:{line}: no column {input_column!r} (the config\'s input '
                           f'column); this row has {sorted(row)}')
      if not str(row[input_column]).strip():
        raise PredictError(f'{path}:{line}: empty value in column {input_column!r}')
      chunk.append({**row, '_line': line})
      if len(chunk) == chunk_rows:
        yield chunk
        chunk = []
  if chunk:
    yield chunk


def _image_chunks(folder: str, chunk_rows: int) -> Iterator[list[dict[str, Any]]]:
  """The images of a folder (recursively, sorted by path) in chunks."""
  paths = sorted(
      os.path.relpath(os.path.join(root, name), folder)
      for root, _, names in os.walk(folder) for name in names
      if os.path.splitext(name)[1].lower() in images.IMAGE_SUFFIXES)
  if not paths:
    raise PredictError(f'{folder}: no images ({", ".join(images.IMAGE_SUFFIXES)}) in the '
                       'folder')
  for start in range(0, len(paths), chunk_rows):
    yield [{IMAGE_PATH_COLUMN: p, '_line': p} for p in paths[start:start + chunk_rows]]


def read_chunks(path: str, input_column: str, *, encoding: str = 'utf-8',
                chunk_rows: int = CHUNK_ROWS) -> Iterator[list[dict[str, Any]]]:
  """The input rows in chunks of ``chunk_rows``: a table file, or an image folder.

  Each row keeps all of its columns (in file order) plus ``_line``, where it came from.

  Raises:
    PredictError: a missing file, an unknown suffix, or a row without a usable input value
      (names the file and line). The table reader's own errors (empty file, bad encoding,
      a row with more fields than the header) name the file and line too.
  """
  if os.path.isdir(path):
    return _image_chunks(path, chunk_rows)
  if not os.path.isfile(path):
    raise PredictError(f'--input={path} does not exist')
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in tables.TABLE_SUFFIXES:
    raise PredictError(f'--input={path}: expected a folder of images or a table file '
                       f'({", ".join(sorted(tables.TABLE_SUFFIXES))}), not {suffix!r}')
  return _table_chunks(path, input_column, None, encoding, chunk_rows)


def write_predictions(output: str, chunks: Iterable[tuple[list[dict[str, Any]],
                                                          Mapping[str, list[Any]]]]) -> int:
  """Writes ``(input rows, prediction columns)`` chunks as one CSV; the number of rows.

  The header is the first chunk's input columns, then its prediction columns. The file
  appears only when every chunk is written (a temporary file renamed at the end).
  """
  partial = output + '.partial'
  rows = 0
  try:
    with open(partial, 'w', newline='', encoding='utf-8') as f:
      writer = None
      for inputs, columns in chunks:
        if writer is None:
          fields = [k for k in inputs[0] if k != '_line'] + list(columns)
          writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
          writer.writeheader()
        for i, row in enumerate(inputs):
          writer.writerow({**row, **{k: _cell(v[i]) for k, v in columns.items()}})
        rows += len(inputs)
    os.replace(partial, output)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return rows


def _cell(value: Any) -> Any:
  return f'{value:.6g}' if isinstance(value, float) else value


def labelled_accuracy(chunks_labels: Sequence[tuple[Sequence[str], Sequence[str]]]) -> float:
  """Accuracy over ``(predictions, labels)`` pairs of chunks (labels as class names)."""
  right = total = 0
  for predictions, labels in chunks_labels:
    right += sum(p == str(l) for p, l in zip(predictions, labels))
    total += len(labels)
  return right / total if total else math.nan
