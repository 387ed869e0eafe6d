"""Train state and optimiser, built on the trainables only.

Frozen U, Vᵀ and shared leaves are never part of the state: they get no gradient, hold no
optimiser moments and are not rewritten by checkpoints.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax

from sve_jax import choices
from sve_jax.tree import PyTree


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: number of optimiser updates applied.
    trainables: per-member leaves with a leading member axis.
    opt_state: optax state of ``trainables``.
    rng: PRNG key for stochastic layers (dropout in baselines), advanced every step.
  """
  step: jax.Array
  trainables: PyTree
  opt_state: optax.OptState
  rng: jax.Array


def create_train_state(trainables: PyTree, optimizer: optax.GradientTransformation,
                       rng: jax.Array) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), trainables=trainables,
                    opt_state=optimizer.init(trainables), rng=rng)


#: Learning-rate schedules by ``config.optim.schedule`` name (see :func:`schedule_for`).
SCHEDULES = ('warmup_cosine', 'official')
#: The authors' release: warm-up over half the steps from lr/5, cosine down to 0.1·lr.
OFFICIAL_WARMUP_FRACTION, OFFICIAL_INIT_FACTOR, OFFICIAL_END_FACTOR = 0.5, 0.2, 0.1


def _make_schedule(learning_rate: float, total_steps: int, warmup_steps: int,
                  end_factor: float = 0., init_factor: float = 0.) -> optax.Schedule:
  """Linear warm-up from ``init_factor·lr`` to ``lr``, then cosine decay to ``end_factor·lr``."""
  warmup_steps = min(int(warmup_steps), max(int(total_steps) - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=init_factor * learning_rate, peak_value=learning_rate,
      warmup_steps=warmup_steps, decay_steps=max(int(total_steps), warmup_steps + 1),
      end_value=end_factor * learning_rate)


def schedule_for(name: str, learning_rate: float, total_steps: int,
                 warmup_fraction: float) -> optax.Schedule:
  """The learning-rate schedule a config names.

  * ``'warmup_cosine'`` (the paper's description): linear warm-up from 0 over
    ``warmup_fraction·total_steps``, then cosine decay to 0.
  * ``'official'`` (the authors' released code): linear warm-up from ``lr/5`` over half the
    steps, then cosine decay to ``0.1·lr``; ``warmup_fraction`` is ignored.

  Raises:
    ValueError: an unknown ``name``.
  """
  check_schedule(name)
  if name == 'official':
    return _make_schedule(learning_rate, total_steps,
                         int(OFFICIAL_WARMUP_FRACTION * total_steps),
                         end_factor=OFFICIAL_END_FACTOR, init_factor=OFFICIAL_INIT_FACTOR)
  return _make_schedule(learning_rate, total_steps, int(warmup_fraction * total_steps))


def check_schedule(name: str, key: str = 'schedule') -> None:
  """Raises ValueError naming ``key`` (e.g. ``config.optim.schedule``) unless ``name`` is one
  of :data:`SCHEDULES`."""
  choices.check_choice(name, SCHEDULES, key)


#: AdamW's moment decay rates (the method's reference values).
ADAM_B1, ADAM_B2 = 0.9, 0.999


def make_optimizer(learning_rate: float, total_steps: int, warmup_steps: int = 0, *,
                   weight_decay: float = 0.05, clip_norm: float | None = 1.0,
                   schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
  """The method's reference optimiser: clip by global norm, AdamW (``b1, b2 = 0.9, 0.999``),
  warm-up + cosine.

  ``schedule`` (e.g. from :func:`schedule_for`) replaces the default
  ``_make_schedule(learning_rate, total_steps, warmup_steps)``.

  Raises:
    ValueError: for a non-positive learning rate or step count.
  """
  if not learning_rate > 0:
    raise ValueError(f'learning_rate must be > 0, got {learning_rate}')
  if int(total_steps) < 1:
    raise ValueError(f'total_steps must be >= 1, got {total_steps}')
  if schedule is None:
    schedule = _make_schedule(learning_rate, total_steps, warmup_steps)
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
  parts.append(optax.adamw(schedule, b1=ADAM_B1, b2=ADAM_B2, weight_decay=weight_decay))
  return optax.chain(*parts)
