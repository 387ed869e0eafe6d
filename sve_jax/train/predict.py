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
import math
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from sve_jax.data import images
from sve_jax.data import tables
from sve_jax.eval import metrics
from sve_jax.eval import selective

#: Rows scored per call of the model (a multiple of the evaluation batch is best).
CHUNK_ROWS = 512
#: The review target when the user gives none: answer 90% of the rows.
DEFAULT_TARGET_COVERAGE = 0.9
IMAGE_PATH_COLUMN = 'path'


class PredictError(ValueError):
  """A user's input to ``--mode=predict`` is unusable (names the file, line or option)."""


@dataclasses.dataclass(frozen=True)
class PredictRequest:
  """What ``--mode=predict`` scores, where it writes, and how it picks the review threshold.

  Attributes:
    input: a CSV, TSV or JSON-lines file (one row per example, the config's input column),
      or a folder of images.
    output: the CSV to write (replaced only when complete).
    target_accuracy: flag rows so that the rest reach this accuracy on validation, or
    target_coverage: flag rows so that this fraction of validation rows is answered;
      neither: :data:`DEFAULT_TARGET_COVERAGE`.
  """
  input: str
  output: str
  target_accuracy: float | None = None
  target_coverage: float | None = None

  def targets(self) -> dict[str, float]:
    """The one target as ``choose_threshold`` keywords."""
    if self.target_accuracy is None and self.target_coverage is None:
      return {'target_coverage': DEFAULT_TARGET_COVERAGE}
    return {'target_accuracy': self.target_accuracy, 'target_coverage': self.target_coverage}

  def check(self) -> None:
    """Cheap checks before any heavy work.

    Raises:
      PredictError: a missing input, an output that is the input or lies in a folder that
        does not exist, or targets that are both given or out of (0, 1].
    """
    if not self.input or not os.path.exists(self.input):
      raise PredictError(f'--input={self.input!r} does not exist')
    if not self.output:
      raise PredictError('--output is required with --mode=predict (a CSV file to write)')
    if os.path.abspath(self.output) == os.path.abspath(self.input):
      raise PredictError(f'--output={self.output} would overwrite --input')
    folder = os.path.dirname(os.path.abspath(self.output))
    if not os.path.isdir(folder):
      raise PredictError(f'--output={self.output}: the folder {folder} does not exist')
    if self.target_accuracy is not None and self.target_coverage is not None:
      raise PredictError('give one of --target_accuracy and --target_coverage, not both')
    for name, value in self.targets().items():
      if value is not None and not 0 < value <= 1:
        raise PredictError(f'--{name}={value} must be in (0, 1]')


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


def _table_chunks(path: str, input_column: str, encoding: str,
                  chunk_rows: int) -> Iterator[list[dict[str, str]]]:
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
  return _table_chunks(path, input_column, encoding, chunk_rows)


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


@dataclasses.dataclass(frozen=True)
class InputColumns:
  """Which columns of the input rows the run reads, and the file's text encoding.

  Attributes:
    input: the column the model reads (the config's text column), or for an image folder
      :data:`IMAGE_PATH_COLUMN`.
    label: the label column; rows that have it get their accuracy reported.
    encoding: the table file's encoding (the config's data option ``encoding``).
  """
  input: str
  label: str | None = None
  encoding: str = 'utf-8'


class CheckedInput(NamedTuple):
  """A predict request whose input was read once and found usable (:func:`check_input`)."""
  request: PredictRequest
  columns: InputColumns
  total_rows: int


def check_input(request: PredictRequest, columns: InputColumns) -> CheckedInput:
  """Reads the whole input once, checking every row: cheap, and before any model is built.

  Raises:
    PredictError, ValueError: as :func:`read_chunks`, naming the file and line.
  """
  total = sum(len(chunk) for chunk in read_chunks(request.input, columns.input,
                                                  encoding=columns.encoding))
  return CheckedInput(request, columns, total)


def _label_index(value: Any, class_names: Sequence[str], where: str) -> int:
  """A label cell as a class index: a class name, or an integer index."""
  text = str(value).strip()
  if text in class_names:
    return list(class_names).index(text)
  if text.lstrip('+-').isdigit() and 0 <= int(text) < len(class_names):
    return int(text)
  raise PredictError(f'{where}: label {text!r} is neither one of the classes '
                     f'{list(class_names)} nor an index below {len(class_names)}')


def predict_to_file(checked: CheckedInput, score: Callable[[list[dict]], np.ndarray],
                    threshold: Threshold, class_names: Sequence[str],
                    mode: str) -> dict[str, Any]:
  """Scores ``request.input`` chunk by chunk and writes ``request.output``.

  Args:
    checked: the request, its input (and label) columns and its rows (:func:`check_input`).
    score: ``rows -> (M, N, C)`` member logits of a chunk of input rows.
    threshold: the review threshold (:func:`choose_threshold`).
    class_names: class names, by label index.
    mode: the ensemble averaging mode.

  Returns:
    The ``predict`` section of ``results.json``: input, output, rows, rows flagged for
    review, the threshold and how it was chosen, and, when the rows carry labels, the
    accuracy over all rows and over the rows not flagged.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  request, columns = checked.request, checked.columns
  counts = {'rows': 0, 'flagged': 0, 'labelled': 0, 'right': 0, 'answered': 0,
            'answered_right': 0}

  def chunks():
    with tqdm(desc='predict', unit='row', total=checked.total_rows) as bar:
      for rows in read_chunks(request.input, columns.input, encoding=columns.encoding):
        predicted = prediction_columns(score(rows), class_names, mode=mode,
                                       threshold=threshold.confidence)
        flagged = np.asarray(predicted['review'])
        counts['rows'] += len(rows)
        counts['flagged'] += int(flagged.sum())
        if columns.label and columns.label in rows[0]:
          labels = np.array([_label_index(r[columns.label], class_names,
                                          f'{request.input}:{r["_line"]}') for r in rows])
          right = labels == np.array([list(class_names).index(p)
                                      for p in predicted['prediction']])
          counts['labelled'] += len(rows)
          counts['right'] += int(right.sum())
          counts['answered'] += int((~flagged).sum())
          counts['answered_right'] += int(right[~flagged].sum())
        bar.update(len(rows))
        yield rows, predicted

  write_predictions(request.output, chunks())
  section = {'input': os.path.abspath(request.input), 'output': os.path.abspath(request.output),
             'rows': counts['rows'], 'flagged_for_review': counts['flagged'],
             'threshold': dataclasses.asdict(threshold)}
  if counts['labelled']:
    section['accuracy'] = counts['right'] / counts['labelled']
    section['accuracy_of_answered'] = (counts['answered_right'] / counts['answered']
                                       if counts['answered'] else math.nan)
  return section
