"""Pure train and eval steps over the member axis; the caller jits them with shardings.

A *forward* (:data:`sve_jax.methods.base.Forward`) is any ``forward(frozen, trainables,
inputs, rng, train) -> member_logits`` with ``member_logits: (M, B, C)``; ``rng`` feeds stochastic layers (dropout) and ``train`` says
whether the step trains. Every method supplies its own (:mod:`sve_jax.methods`) and shares
everything else (loss, step, checkpoints, report).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from sve_jax.methods.base import FeaturesForward
from sve_jax.methods.base import Forward
from sve_jax.train.state import TrainState
from sve_jax.tree import PyTree



def member_cross_entropy(member_logits: jax.Array, labels: jax.Array,
                         mask: jax.Array | None = None) -> jax.Array:
  """Each member's mean softmax cross-entropy over (unmasked) examples: shape ``(M,)``."""
  labels = jnp.broadcast_to(labels, member_logits.shape[:-1])
  losses = optax.softmax_cross_entropy_with_integer_labels(
      member_logits.astype(jnp.float32), labels)
  if mask is None:
    return losses.mean(axis=-1)
  mask = mask.astype(jnp.float32)
  return (losses * mask).sum(axis=-1) / jnp.maximum(mask.sum(), 1.)


def ensemble_loss(forward: Forward) -> Callable[..., tuple[jax.Array, dict]]:
  """``loss(trainables, frozen, batch, rng)``: mean over members of each member's loss.

  All members see the same mini-batch. ``batch`` holds ``inputs``, ``label`` and optionally
  a boolean ``mask`` of real (non-padding) examples.
  """

  def loss_fn(trainables, frozen, batch, rng):
    logits = forward(frozen, trainables, batch['inputs'], rng, True)
    per_member = member_cross_entropy(logits, batch['label'], batch.get('mask'))
    return per_member.mean(), {'member_loss': per_member}

  return loss_fn


def make_train_step(forward: Forward, optimizer: optax.GradientTransformation):
  """``train_step(state, frozen, batch) -> (state, metrics)``; grads on trainables only."""
  loss_fn = ensemble_loss(forward)

  def train_step(state: TrainState, frozen: PyTree, batch: dict):
    rng, step_rng = jax.random.split(state.rng)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.trainables, frozen, batch, step_rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainables)
    trainables = optax.apply_updates(state.trainables, updates)
    metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
               'member_loss': aux['member_loss']}
    return state.replace(step=state.step + 1, trainables=trainables, opt_state=opt_state,
                         rng=rng), metrics

  return train_step


def make_multi_step(train_step):
  """``multi_step(state, frozen, batches) -> (state, metrics)``: ``train_step`` applied to
  each batch along ``batches``' leading (steps) axis in one ``lax.scan``; ``metrics`` are
  stacked along that axis.

  One call then runs several steps. On CPU, XLA allocates (and the kernel zeroes) a
  program's temporaries afresh per call; a scan pays that once per call, not once per step.
  """

  def multi_step(state: TrainState, frozen: PyTree, batches: dict):
    return jax.lax.scan(lambda s, batch: train_step(s, frozen, batch), state, batches)

  return multi_step


def make_eval_step(forward: Forward | FeaturesForward):
  """``eval_step(trainables, frozen, inputs, rng) -> member_logits (M, B, C)`` in float32;
  for a :data:`~sve_jax.methods.base.FeaturesForward`, ``(member_logits, member_features
  (M, B, D))``, both in float32."""

  def eval_step(trainables, frozen, inputs, rng):
    return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32),
                                  forward(frozen, trainables, inputs, rng, False))

  return eval_step
