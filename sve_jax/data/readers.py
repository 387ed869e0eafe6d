"""Readers for the raw local files behind the dataset builders.

Pure functions from files to Python and NumPy values. Nothing here knows tfds:
the builders in `builders.py` call these at prepare time, and tests can check
them against independent readers.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import hashlib
import inspect
import importlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# IDX type codes (http://yann.lecun.com/exdb/mnist/): data are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype('u1'),
    0x09: np.dtype('i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}
_GZIP_MAGIC = b'\x1f\x8b'

IMAGE_SUFFIXES = ('.bmp', '.gif', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')
TABLE_SUFFIXES = {'.csv': 'csv', '.tsv': 'tsv', '.jsonl': 'jsonl', '.ndjson': 'jsonl'}
# A table line or field longer than this is a broken file (often an unbalanced quote that
# swallows the rest of a CSV), not a text example: models read a few hundred tokens.
MAX_FIELD_CHARS = 1 << 20


# ---------------------------------------------------------------- IDX files


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (the MNIST / Fashion-MNIST format), raw or gzipped.

  Gzip is recognised by its magic bytes, not by the file name.

  Args:
    path: the file.

  Returns:
    An array with the dtype and shape that the IDX header declares.

  Raises:
    ValueError: if the header is not IDX or the payload has the wrong size.
  """
  with open(path, 'rb') as f:
    data = f.read()
  if data[:2] == _GZIP_MAGIC:
    data = gzip.decompress(data)
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise ValueError(f'{path}: not an IDX file (header bytes {data[:4]!r}).')
  dtype, ndim = _IDX_DTYPES[data[2]], data[3]
  header_size = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, offset=4))
  expected_bytes = header_size + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected_bytes:
    raise ValueError(
        f'{path}: IDX header declares shape {shape} of {dtype} '
        f'({expected_bytes} bytes with header) but the file has {len(data)} bytes.')
  return np.frombuffer(data, dtype, offset=header_size).reshape(shape).astype(
      dtype.newbyteorder('='))


def find_idx_file(directory: str | os.PathLike, stem: str) -> str:
  """Returns `directory/stem`, or `directory/stem.gz` when only that exists."""
  for name in (stem, stem + '.gz'):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f'{directory}: expected IDX file {stem} or {stem}.gz (Debian package '
      '`dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist).')


# ---------------------------------------------------------------- tables


def read_table(path: str | os.PathLike,
               columns: Sequence[str],
               *,
               encoding: str = 'utf-8',
               may_be_empty: Sequence[str] = ()) -> dict[str, list[str]]:
  """Reads the named columns of a CSV, TSV or JSON-lines file as strings.

  The format follows the suffix: `.csv`, `.tsv`, `.jsonl` / `.ndjson`. JSON
  values that are not strings (e.g. integer labels) are converted with `str`.

  Args:
    path: the file.
    columns: the columns to return; each must exist in every row.
    encoding: text encoding of the file.
    may_be_empty: those of `columns` whose values may be empty (returned as
      `''`), e.g. an annotation recorded for some rows only.

  Returns:
    `{column: [value per row]}` in file order.

  Raises:
    ValueError: naming the file (and line) on an unknown suffix, a missing
      column or an empty value.
  """
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  if suffix not in TABLE_SUFFIXES:
    raise ValueError(f'{path}: unsupported table suffix {suffix!r}; expected one '
                     f'of {sorted(TABLE_SUFFIXES)}.')
  kind = TABLE_SUFFIXES[suffix]
  values = {column: [] for column in columns}
  with _table_lines(path, encoding, header_lines=int(kind != 'jsonl')) as f:
    if kind == 'jsonl':
      rows = _jsonl_rows(f, path, columns)
    else:
      reader = csv.DictReader(f, delimiter='\t' if kind == 'tsv' else ',')
      missing = [c for c in columns if c not in (reader.fieldnames or [])]
      if missing:
        raise ValueError(f'{path}: missing column(s) {missing}; the header has '
                         f'columns {reader.fieldnames}.')
      # Line numbers count the header as line 1.
      rows = ((line, row) for line, row in enumerate(reader, start=2))
    for line, row in rows:
      for column in columns:
        value = row[column]
        if value is None and column in may_be_empty:
          value = ''
        if column not in may_be_empty and (
            value is None or (isinstance(value, str) and not value.strip())):
          raise ValueError(f'{path}:{line}: empty value in column {column!r}.')
        values[column].append(value if isinstance(value, str) else str(value))
  return values


@contextlib.contextmanager
def _table_lines(path, encoding: str, header_lines: int):
  """The lines of a table file, turning what users' files get wrong into clear errors.

  Raises:
    ValueError: naming the file (and the line where there is one) for an unknown
      encoding, an empty file, bytes that are not valid `encoding`, a line or CSV field
      longer than `MAX_FIELD_CHARS`, or a file without data rows.
  """
  try:
    codecs.lookup(encoding)
  except LookupError:
    raise ValueError(f'{path}: unknown encoding {encoding!r} (data option `encoding`); '
                     "e.g. 'utf-8', 'latin-1', 'utf-16'.") from None
  if os.path.getsize(path) == 0:
    raise ValueError(f'{path}: the file is empty.')
  default_limit = csv.field_size_limit(MAX_FIELD_CHARS)
  try:
    with open(path, encoding=encoding, newline='') as f:
      lines = _CountedLines(f, path)
      try:
        yield lines
      except UnicodeDecodeError:
        raise ValueError(_decode_error_message(path, encoding)) from None
      except csv.Error as e:
        raise ValueError(f'{path}:{lines.count}: {e} (limit {MAX_FIELD_CHARS:,} characters); '
                         'is a quote left open on an earlier line?') from None
  finally:
    csv.field_size_limit(default_limit)
  if lines.non_blank <= header_lines:
    raise ValueError(f'{path}: no data rows'
                     + (' after the header line.' if header_lines else '.'))


class _CountedLines:
  """Iterates a text file's lines, counting them and refusing absurdly long ones."""

  def __init__(self, lines: Iterable[str], path):
    self.lines, self.path = iter(lines), path
    self.count = self.non_blank = 0

  def __iter__(self):
    return self

  def __next__(self) -> str:
    line = next(self.lines)
    self.count += 1
    self.non_blank += bool(line.strip())
    if len(line) > MAX_FIELD_CHARS:
      raise ValueError(f'{self.path}:{self.count}: the line has {len(line):,} characters '
                       f'(limit {MAX_FIELD_CHARS:,}); is a quote left open, or is this not '
                       'a table of text examples?')
    return line


def _decode_error_message(path, encoding: str) -> str:
  """Names the first line of `path` that is not valid `encoding`, and its bytes."""
  decoder = codecs.getincrementaldecoder(encoding)()
  with open(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):
      try:
        decoder.decode(raw)
      except UnicodeDecodeError as e:
        return (f'{path}:{number}: bytes {raw[e.start:e.end]!r} are not valid {encoding} '
                f'({e.reason}); set the data option `encoding` to the file\'s encoding, '
                "e.g. 'latin-1' or 'cp1252'.")
  return f'{path}: not valid {encoding}; set the data option `encoding`.'


def _jsonl_rows(lines: Iterable[str], path, columns: Sequence[str]):
  """Yields `(line number, record)` for the non-blank lines of a JSONL file."""
  for line, text in enumerate(lines, start=1):
    if not text.strip():
      continue
    try:
      record = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:{line}: invalid JSON ({e.msg}).') from None
    if not isinstance(record, dict):
      raise ValueError(f'{path}:{line}: expected a JSON object per line, got a '
                       f'{type(record).__name__} ({text.strip()[:40]!r}).')
    missing = [c for c in columns if c not in record]
    if missing:
      raise ValueError(f'{path}:{line}: missing key(s) {missing}; the record '
                       f'has keys {sorted(record)}.')
    yield line, record


# ---------------------------------------------------------------- labels


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


# ---------------------------------------------------------------- splits


def split_indices(num_examples: int, fractions: Mapping[str, float],
                  seed: int) -> dict[str, np.ndarray]:
  """Partitions `range(num_examples)` into named splits, fixed by `seed`.

  A seeded permutation is cut at `round(cumsum(fractions) * num_examples)`, so
  the splits are disjoint, cover every index, and their sizes differ from
  `fraction * num_examples` by less than one.

  Args:
    num_examples: how many examples to split.
    fractions: `{split name: fraction}`; non-negative, summing to 1.
    seed: seed of the permutation.

  Returns:
    `{split name: sorted int64 indices}` in the order of `fractions`.
  """
  names, values = list(fractions), np.array(list(fractions.values()), float)
  if not names or (values < 0).any() or not np.isclose(values.sum(), 1.0):
    raise ValueError('split fractions must be non-negative and sum to 1, got '
                     f'{dict(fractions)}.')
  order = np.random.default_rng(seed).permutation(num_examples)
  bounds = np.round(np.cumsum(values) * num_examples).astype(int)
  starts = np.concatenate([[0], bounds[:-1]])
  return {name: np.sort(order[a:b]) for name, a, b in zip(names, starts, bounds)}


# ---------------------------------------------------------------- images


def list_image_folder(folder: str | os.PathLike) -> list[tuple[str, str]]:
  """Lists `(relative path, class name)` of a folder with a subfolder per class.

  Subfolders and files are sorted by name; hidden entries are ignored, and files
  without an image suffix (`IMAGE_SUFFIXES`) are skipped with a warning that
  counts them.

  Raises:
    ValueError: naming the folder if it has no class subfolder or no image, or
      naming a class subfolder that holds no image.
  """
  if not os.path.isdir(folder):
    raise ValueError(f'{folder}: not a folder (expected one subfolder per class).')
  classes = sorted(e.name for e in os.scandir(folder)
                   if e.is_dir() and not e.name.startswith('.'))
  if not classes:
    raise ValueError(f'{folder}: no class subfolders (expected one per class).')
  files, skipped = [], []
  for name in classes:
    entries = [e for e in sorted(os.scandir(os.path.join(folder, name)), key=lambda e: e.name)
               if e.is_file() and not e.name.startswith('.')]
    images = [e for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    skipped += [f'{name}/{e.name}' for e in entries if e not in images]
    if not images:
      raise ValueError(f'{os.path.join(folder, name)}: class folder without image files '
                       f'(suffixes {IMAGE_SUFFIXES}); add images or remove the folder, as a '
                       'class without examples cannot be learned.')
    files += [(f'{name}/{e.name}', name) for e in images]
  if skipped:
    logging.warning('%s: skipped %d file(s) without an image suffix %s: %s', folder,
                    len(skipped), IMAGE_SUFFIXES, skipped[:5])
  if not files:
    raise ValueError(f'{folder}: no image files with suffix in {IMAGE_SUFFIXES}.')
  return files


def load_image(path: str | os.PathLike, size: tuple[int, int],
               channels: int = 3) -> np.ndarray:
  """Decodes an image with PIL and resizes it (bilinear) to `size = (h, w)`.

  Any PIL mode is converted: grey to RGB repeats the grey level, and an alpha
  channel is dropped (not composited onto a background).

  Returns:
    uint8 array of shape `(h, w, channels)`; `channels` is 3 (RGB) or 1 (L).

  Raises:
    ValueError: naming the file if PIL cannot decode it (corrupt or not an image).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  mode = {3: 'RGB', 1: 'L'}[channels]
  try:
    with Image.open(path) as image:
      resized = image.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for damaged files
    raise ValueError(f'{path}: cannot decode the image ({type(e).__name__}: {e}); replace '
                     'or delete the file.') from None
  return np.asarray(resized, np.uint8).reshape(size[0], size[1], channels)


# ---------------------------------------------------------------- stdlib text

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


# ---------------------------------------------------------------- provenance


def fingerprint(paths: Iterable[str | os.PathLike]) -> str:
  """A short hash of the paths, sizes and modification times of files.

  Cheap (no file contents are read); changes when a file is replaced or edited,
  so prepared data derived from the files is not reused by mistake.
  """
  digest = hashlib.sha256()
  for path in paths:
    stat = os.stat(path)
    digest.update(f'{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()[:12]
