"""Tables of text examples: CSV, TSV and JSON-lines files, read with errors that name the line.

`read_table` returns the named columns of a whole file (what the `csv_text` builder reads);
`table_lines` and `table_rows` stream a file row by row, every column kept.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import os
from collections.abc import Iterable, Iterator, Sequence

TABLE_SUFFIXES = {'.csv': 'csv', '.tsv': 'tsv', '.jsonl': 'jsonl', '.ndjson': 'jsonl'}
# A table line or field longer than this is a broken file (often an unbalanced quote that
# swallows the rest of a CSV), not a text example: models read a few hundred tokens.
MAX_FIELD_CHARS = 1 << 20


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
  with table_lines(path, encoding, header_lines=int(kind != 'jsonl')) as lines:
    for line, row in table_rows(lines, kind, path, columns):
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
def table_lines(path: str | os.PathLike, encoding: str,
                header_lines: int) -> Iterator[Iterable[str]]:
  """The lines of a table file, turning what users' files get wrong into clear errors.

  Use as `with table_lines(path, encoding, header_lines) as lines:` and read `lines`
  (e.g. with `table_rows`) inside the block; the checks on the whole file run when it ends.

  Args:
    path: the file.
    encoding: its text encoding.
    header_lines: how many non-blank lines precede the data (1 for CSV/TSV, 0 for JSONL).

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


def table_rows(lines: Iterable[str], kind: str, path: str | os.PathLike,
               columns: Sequence[str] = ()) -> Iterable[tuple[int, dict]]:
  """Yields `(line number, {column: value})` for each data row of a table, every column kept.

  Args:
    lines: the file's lines, e.g. from `table_lines`.
    kind: `'csv'`, `'tsv'` or `'jsonl'` (the values of `TABLE_SUFFIXES`).
    path: the file, for messages.
    columns: columns every row must have.

  Raises:
    ValueError: naming the file (and line) of a header or JSON record without one of
      `columns`, of a line that is not a JSON object, or of a CSV/TSV row with more fields
      than the header has columns (often an unquoted delimiter inside the text).
  """
  if kind == 'jsonl':
    yield from _jsonl_rows(lines, path, columns)
    return
  reader = csv.DictReader(lines, delimiter='\t' if kind == 'tsv' else ',')
  missing = [c for c in columns if c not in (reader.fieldnames or [])]
  if missing:
    raise ValueError(f'{path}: missing column(s) {missing}; the header has '
                     f'columns {reader.fieldnames}.')
  # Line numbers count the header as line 1.
  for line, row in enumerate(reader, start=2):
    if None in row:   # DictReader puts the fields beyond the header under the key None.
      raise ValueError(f'{path}:{line}: {len(reader.fieldnames) + len(row[None])} fields, but '
                       f'the header has {len(reader.fieldnames)} columns '
                       f'{reader.fieldnames}; quote a text that holds the delimiter.')
    yield line, row


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
