"""One checker for every configured name (execution paths, averaging modes, schedules)."""
import pytest

from sve_jax import choices
from sve_jax import ensemble
from sve_jax import execution
from sve_jax.train import state


def test_a_known_name_passes_and_an_unknown_one_names_the_key_and_the_choices():
  choices.check_choice('b', ('a', 'b'), 'config.x')
  with pytest.raises(ValueError, match=r"^config.x='c' must be one of \('a', 'b'\)$"):
    choices.check_choice('c', ['a', 'b'], 'config.x')


@pytest.mark.parametrize('check,known', [
    (execution.check_execution, execution.EXECUTIONS),
    (ensemble.check_ensemble_mode, ensemble.ENSEMBLE_MODES),
    (state.check_schedule, state.SCHEDULES),
])
def test_each_modules_checker_accepts_its_names_and_names_the_key(check, known):
  for name in known:
    check(name, 'config.key')
  with pytest.raises(ValueError, match=r"^config.key='nope' must be one of"):
    check('nope', 'config.key')
