"""Evaluation passes: member logits over every example of a split, on the mesh.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import numpy as np

from sve_jax import ensemble
from sve_jax import execution
from sve_jax import factorize
from sve_jax.data import builders
from sve_jax.data import pipeline
from sve_jax.train import sharding
from sve_jax.train import steps


class Predictions(NamedTuple):
  """Member logits ``(M, N, C)``, labels ``(N,)`` and, where the data set records it, the
  annotators' agreement ``(N,)`` (feature ``builders.AGREEMENT_FEATURE``; NaN = unknown)."""
  logits: np.ndarray
  labels: np.ndarray
  agreement: np.ndarray | None


def predict(eval_fn, state_trainables, frozen, source, transform, mesh,
            batch_size: int) -> Predictions:
  """:class:`Predictions` over every example of ``source``.

  Eval batch ``i`` gets the rng ``fold_in(key(0), i)``: stochastic forwards (MC dropout) are
  reproducible, with independent masks from batch to batch.
  """
  logits, labels, agreement = [], [], []
  for i, raw in enumerate(pipeline.eval_batches(source, global_batch_size=batch_size,
                                                process_index=jax.process_index(),
                                                process_count=jax.process_count())):
    batch = transform(raw)
    inputs = sharding.shard_batch(batch['inputs'], mesh)
    out = eval_fn(state_trainables, frozen, inputs, jax.random.fold_in(jax.random.key(0), i))
    out = sharding.to_host(out)
    # Each process read its own slice of the batch: gather them in process order.
    mask, label = (sharding.gather_process_slices(np.asarray(v))
                   for v in (raw['mask'], batch['label']))
    logits.append(out[:, mask])
    labels.append(label[mask])
    if builders.AGREEMENT_FEATURE in raw:
      agreement.append(sharding.gather_process_slices(
          np.asarray(raw[builders.AGREEMENT_FEATURE], np.float32))[mask])
  return Predictions(np.concatenate(logits, axis=1), np.concatenate(labels),
                     np.concatenate(agreement) if agreement else None)


def make_evaluate(setup, backbone, trainables, frozen, mesh, batch_size: int, source,
                  transform):
  """``evaluate(trainables, source, transform=transform) -> Predictions``.

  For the SVE family, every member's kernels are composed once per evaluation
  (:func:`sve_jax.ensemble.materialize_kernels`) when that costs less than the cheaper path
  per kernel (``auto``'s choice) on each of ``source``'s batches. The choice is made once, on
  ``source`` (the validation split), and serves every split evaluated; the logits are the
  same either way.
  """
  prepare = None
  eval_frozen, eval_trainables = frozen, trainables
  if _materialize_pays_off(setup, backbone, trainables, mesh, batch_size, source, transform):
    eval_frozen, eval_trainables = jax.eval_shape(ensemble.materialize_kernels, frozen,
                                                  trainables)
    prepare = jax.jit(ensemble.materialize_kernels, out_shardings=(
        sharding.replicated_shardings(mesh, eval_frozen),
        sharding.per_member_shardings(mesh, eval_trainables)))
    logging.info("evaluation composes every member's kernels once per pass")
  eval_fn = sharding.jit_eval_step(steps.make_eval_step(setup.forward), mesh, eval_trainables,
                                   eval_frozen)

  def evaluate(trainables, source, transform=transform):
    f, t = prepare(frozen, trainables) if prepare else (frozen, trainables)
    return predict(eval_fn, t, f, source, transform, mesh, batch_size)

  return evaluate


def make_zero_shot_evaluate(backbone, mesh, batch_size: int, transform):
  """``evaluate(source, transform=transform) -> Predictions`` of the pretrained backbone
  itself, as one member (logits ``(1, N, C)``): the zero-shot model, before any training.

  Meaningful for a backbone without a fresh head (a decoder scoring its verbaliser's tokens
  with its LM head); a fresh head would score every class alike.
  """
  params = sharding.place(backbone.params, sharding.replicated_shardings(mesh, backbone.params))
  forward = jax.jit(
      lambda p, inputs: backbone.apply(p, inputs)[None].astype(np.float32),
      in_shardings=(sharding.replicated_shardings(mesh, params), sharding.batch_sharding(mesh)),
      out_shardings=jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(None, sharding.DATA)))

  def evaluate(source, transform=transform):
    eval_fn = lambda trainables, frozen, inputs, rng: forward(frozen, inputs)
    return predict(eval_fn, None, params, source, transform, mesh, batch_size)

  return evaluate


def _materialize_pays_off(setup, backbone, trainables, mesh, batch_size: int, source,
                          transform) -> bool:
  """:func:`ensemble.materialize_pays_off` over ``source``'s batches, with the positions each
  decomposed kernel meets in one batch on one device (abstract evaluation of its first batch).
  """
  if not factorize.layouts(setup.frozen):
    return False
  raw = next(iter(pipeline.eval_batches(source, global_batch_size=batch_size,
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count())))
  per_device = max(1, batch_size // mesh.shape[sharding.DATA])
  inputs = jax.tree_util.tree_map(lambda x: np.asarray(x)[:per_device],
                                  transform(raw)['inputs'])
  member_0 = jax.tree_util.tree_map(lambda t: jax.ShapeDtypeStruct(t.shape[1:], t.dtype),
                                    trainables)
  positions = execution.kernel_positions(backbone.apply, setup.frozen, member_0, inputs)
  return ensemble.materialize_pays_off(setup.frozen, positions, -(-len(source) // batch_size))
