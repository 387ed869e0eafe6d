"""Classes absent from an example: a per-example mask over the class logits.

A multiple-choice data set has a fixed class set (the answer letters A, B, C, ...), but not
every question offers every letter: an ARC question with 3 choices has no D or E. Its batch
then carries ``inputs[KEY]``, ``(B, C)`` bool (True = the example offers that class), and
:class:`sve_jax.models.Backbone` sets the logits of absent classes to :data:`ABSENT_LOGIT`.
The data transforms (``sve_jax.data``) write the key and the backbones (``sve_jax.models``)
read it here, so neither package imports the other.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

#: The input feature holding the mask, ``(B, C)`` bool.
KEY = 'class_mask'
#: The logit of an absent class. Finite, unlike -inf: its softmax probability is exactly 0 in
#: float32 (exp(-1e9) underflows), yet averaging members' logits, scaling by a temperature or
#: multiplying by a zero weight never turns it into NaN.
ABSENT_LOGIT = -1e9


def split_inputs(inputs: Any) -> tuple[Any, jax.Array | None]:
  """``(inputs without KEY, the mask or None)``; inputs that are not a mapping pass whole."""
  if not isinstance(inputs, Mapping) or KEY not in inputs:
    return inputs, None
  return {k: v for k, v in inputs.items() if k != KEY}, inputs[KEY]


def mask_logits(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
  """``logits (..., B, C)`` with the classes ``mask (B, C)`` marks False set to
  :data:`ABSENT_LOGIT` (no gradient flows to them); ``mask=None`` returns ``logits``.

  Raises:
    ValueError: the mask's class axis does not match the logits'.
  """
  if mask is None:
    return logits
  if jnp.shape(mask)[-1] != logits.shape[-1]:
    raise ValueError(f'{KEY} has {jnp.shape(mask)[-1]} classes but the model gives '
                     f'{logits.shape[-1]} logits')
  return jnp.where(jnp.asarray(mask, bool), logits, jnp.asarray(ABSENT_LOGIT, logits.dtype))
