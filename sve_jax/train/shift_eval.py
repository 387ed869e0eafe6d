"""The final evaluation under distribution shift: the best members on corrupted copies of a
test subset (``config.shift``; :mod:`sve_jax.data.corruptions`, :mod:`sve_jax.eval.shift`).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple

from sve_jax.data import corruptions
from sve_jax.eval import shift as shift_lib
from sve_jax.train.evaluate import Split


class ShiftPlan(NamedTuple):
  """What :func:`evaluate_shift` scores.

  Attributes:
    source: the (capped, seeded) test subset every corruption copies.
    input_key: its input feature (``image``, ``text``, ``sentence``).
    corruptions: corruption names, in the results' order.
    severities: severities (1-5) of each.
    seed: the run's seed, from which each example's corruption seed is drawn
      (:func:`corruptions.example_seed`).
  """
  source: Any
  input_key: str
  corruptions: tuple[str, ...]
  severities: tuple[int, ...]
  seed: int


def evaluate_shift(plan: ShiftPlan, predictor: Callable, trainables: Any,
                   transform: Callable[[dict], dict], mode: str) -> dict[str, Any]:
  """The ``shift`` section (:func:`shift_lib.shift_section`): ``predictor``'s members
  ``trainables`` scored (:func:`shift_lib.shift_scores`) on ``plan.source``, clean and under
  each corruption at each severity, every copy through the same ``transform``.

  A collective with several processes: every process calls it.
  """
  def scores(source) -> dict[str, float]:
    predictions = predictor(trainables, Split(source, transform))
    return shift_lib.shift_scores(predictions.logits, predictions.labels, mode)

  clean = scores(plan.source)
  by_name = {}
  for name in plan.corruptions:
    by_name[name] = {severity: scores(corruptions.CorruptedSource(
        plan.source, plan.input_key, corruptions.Corruption(name, severity, plan.seed)))
                     for severity in plan.severities}
    logging.info('shift: %s accuracy %s (clean %.4f)', name,
                 ' '.join(f"{s['accuracy']:.4f}" for s in by_name[name].values()),
                 clean['accuracy'])
  return shift_lib.shift_section(clean, by_name,
                                 {name: corruptions.family(name) for name in plan.corruptions},
                                 len(plan.source))
