"""Which failures count as a user's mistake (one line, status 2) and which as bugs."""
import numpy as np
import pytest

from sve_jax.data import tables
from sve_jax.train import user_errors


def _raised(fn):
  try:
    fn()
  except Exception as e:  # pylint: disable=broad-except
    return e
  raise AssertionError('nothing raised')


def test_an_error_the_project_raises_on_purpose_is_a_users_mistake(tmp_path):
  path = tmp_path / 'notes.xlsx'
  path.write_text('x')
  error = _raised(lambda: tables.read_table(path, ['text']))
  message = user_errors.user_error_message(error)
  assert message.startswith(f'{path}: unsupported table suffix') and '\n' not in message


def test_the_same_type_raised_inside_a_library_is_a_bug():
  error = _raised(lambda: np.reshape(np.zeros(3), (2, 2)))
  assert isinstance(error, ValueError)
  assert user_errors.user_error_message(error) is None


def test_other_types_are_bugs_even_from_the_project():
  def project_bug():
    return {}['missing']
  # Written here, in tests/ (not the package): raised_by_project is False either way, and a
  # KeyError is never a user error.
  assert user_errors.user_error_message(_raised(project_bug)) is None


def test_sve_traceback_shows_user_errors_as_bugs(tmp_path, monkeypatch):
  path = tmp_path / 'notes.xlsx'
  path.write_text('x')
  error = _raised(lambda: tables.read_table(path, ['text']))
  monkeypatch.setenv('SVE_TRACEBACK', '1')
  assert user_errors.user_error_message(error) is None
