"""The optimiser and its learning-rate schedules."""
import math

import pytest

from sve_jax.train import state as train_state


def _cosine(step, lr, total, warmup, init, end):
  """The warm-up + cosine schedule written out by hand."""
  if step < warmup:
    return init + (lr - init) * step / warmup
  progress = (step - warmup) / (total - warmup)
  return end + (lr - end) * 0.5 * (1. + math.cos(math.pi * progress))


def test_default_schedule_is_unchanged_and_official_follows_the_authors_release():
  lr, total = 2e-3, 200
  default = train_state.schedule_for('warmup_cosine', lr, total, warmup_fraction=0.1)
  official = train_state.schedule_for('official', lr, total, warmup_fraction=0.1)
  for step in (0, 7, 20, 21, 100, 150, 199, 200):
    assert float(default(step)) == pytest.approx(_cosine(step, lr, total, 20, 0., 0.),
                                                 rel=1e-5, abs=1e-9)
    # Warm-up over half the steps from lr/5; the cosine ends at 0.1·lr.
    assert float(official(step)) == pytest.approx(_cosine(step, lr, total, 100, lr / 5,
                                                          lr / 10), rel=1e-5)
  assert float(official(0)) == pytest.approx(lr / 5)
  assert float(official(100)) == pytest.approx(lr)
  assert float(official(total)) == pytest.approx(lr / 10)
  with pytest.raises(ValueError, match=r"schedule='linear' must be one of \('warmup_cosine', "
                                       r"'official'\)"):
    train_state.schedule_for('linear', lr, total, 0.1)


def test_optimizer_rejects_bad_learning_rate():
  import pytest
  with pytest.raises(ValueError, match='learning_rate must be > 0'):
    train_state.make_optimizer(0., total_steps=10)
