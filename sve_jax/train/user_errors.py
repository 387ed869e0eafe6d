"""Which failures are a user's mistake, and how the command line reports them.

A user's mistake (a bad config value or flag, an unreadable file, a workdir of another run, a
missing checkpoint) is an exception the project raises on purpose, with a message that says
what is wrong and where. ``train.py`` prints such an error as one line, ``error: <message>``,
and exits with status :data:`EXIT_USER_ERROR`; everything else is a bug and keeps its
traceback. The ``benchmarks`` commands run under the same contract (:func:`run_cli`).

*On purpose* means: an exception of one of :data:`USER_ERROR_TYPES` raised by a ``raise``
statement in the project's own files (the package, ``configs/`` or ``train.py``: the
innermost frame of its traceback is there). The same types raised inside a library (a shape
error in jax, say) are bugs and are re-raised with their traceback. ``SVE_TRACEBACK=1``
shows the traceback of a user error too.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

from absl import app
from absl import flags

EXIT_USER_ERROR = 2
#: Exception types the project raises for users' mistakes (NaN losses included: a
#: learning rate too high is a setting to change, not a bug).
USER_ERROR_TYPES = (ValueError, OSError, RuntimeError, FloatingPointError)
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PROJECT_PARTS = (os.path.join(_PROJECT_ROOT, 'sve_jax') + os.sep,
                  os.path.join(_PROJECT_ROOT, 'configs') + os.sep,
                  os.path.join(_PROJECT_ROOT, 'benchmarks') + os.sep,
                  os.path.join(_PROJECT_ROOT, 'train.py'))


def raised_by_project(error: BaseException) -> bool:
  """Whether ``error``'s innermost traceback frame is in the project's own files."""
  frames = traceback.extract_tb(error.__traceback__)
  if not frames:
    return False
  filename = os.path.abspath(frames[-1].filename)
  return any(filename.startswith(part) for part in _PROJECT_PARTS)


def user_error_message(error: BaseException) -> str | None:
  """The message of a user's mistake on one line (``train.py`` prints it after
  ``error:``), or ``None`` for a bug (or when ``SVE_TRACEBACK=1`` asks for the traceback)."""
  if os.environ.get('SVE_TRACEBACK') == '1':
    return None
  if not isinstance(error, USER_ERROR_TYPES) or not raised_by_project(error):
    return None
  return ' '.join(str(error).split()) or type(error).__name__


def fail(message: str) -> None:
  """Prints ``error: <message>`` on stderr and exits with :data:`EXIT_USER_ERROR`."""
  print(f'error: {message}', file=sys.stderr)
  raise SystemExit(EXIT_USER_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config override as one line and status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(' '.join(str(e).split()))


def run_cli(main: Callable[[list[str]], object]) -> None:
  """``absl.app.run(main)`` under the project's contract, for ``train.py`` and every
  ``benchmarks`` command: a bad flag, or a user's mistake raised in ``main``
  (:func:`user_error_message`), prints one line and exits with status 2; a bug keeps its
  traceback."""
  def guarded(argv):
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      message = user_error_message(e)
      if message is None:
        raise  # a bug: keep the traceback
      fail(message)
  app.run(guarded, flags_parser=parse_flags)
