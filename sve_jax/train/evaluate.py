"""Evaluation passes: member logits over every example of a split, on the mesh.

:func:`make_predictor` returns ``predictor(trainables, split) -> Predictions``, what validation
and the final evaluation call on each split.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax
import numpy as np

from sve_jax import data
from sve_jax import ensemble
from sve_jax import execution
from sve_jax import factorize
from sve_jax import methods
from sve_jax.data import pipeline
from sve_jax.eval.report import Predictions
from sve_jax.train import sharding
from sve_jax.train import steps
from sve_jax.train.loop import Training
from sve_jax.tree import PyTree

if TYPE_CHECKING:
  from sve_jax.models import Backbone


class Split(NamedTuple):
  """A split to evaluate: its examples, and the transform of a raw batch into
  ``{'inputs', 'label'}``."""
  source: Any
  transform: Callable[[dict], dict]


def split_predictions(eval_fn: Callable[..., Any], trainables: PyTree, frozen: PyTree,
                      split: Split, mesh: jax.sharding.Mesh, batch_size: int) -> Predictions:
  """:class:`Predictions` of ``eval_fn`` over every example of ``split``; its ``features``
  too where ``eval_fn`` returns ``(logits, features)``.

  Eval batch ``i`` gets the rng ``fold_in(key(0), i)``: stochastic forwards (MC dropout) are
  reproducible, with independent masks from batch to batch.
  """
  logits, features, labels, agreement = [], [], [], []
  for i, raw in enumerate(pipeline.eval_batches(split.source, global_batch_size=batch_size,
                                                process_index=jax.process_index(),
                                                process_count=jax.process_count())):
    batch = split.transform(raw)
    inputs = sharding.shard_batch(batch['inputs'], mesh)
    out = eval_fn(trainables, frozen, inputs, jax.random.fold_in(jax.random.key(0), i))
    out = sharding.to_host(out)
    # Each process read its own slice of the batch: gather them in process order.
    mask, label = (sharding.gather_process_slices(np.asarray(v))
                   for v in (raw['mask'], batch['label']))
    if isinstance(out, tuple):  # a features forward: (logits, features)
      out, member_features = out
      features.append(member_features[:, mask])
    logits.append(out[:, mask])
    labels.append(label[mask])
    if data.AGREEMENT_FEATURE in raw:
      agreement.append(sharding.gather_process_slices(
          np.asarray(raw[data.AGREEMENT_FEATURE], np.float32))[mask])
  return Predictions(np.concatenate(logits, axis=1), np.concatenate(labels),
                     np.concatenate(agreement) if agreement else None,
                     np.concatenate(features, axis=1) if features else None)


def make_predictor(setup: methods.MethodSetup, backbone: Backbone, training: Training,
                   mesh: jax.sharding.Mesh, batch_size: int, first: Split,
                   frozen_layout: str = 'replicated') -> Callable[..., Predictions]:
  """``predictor(trainables, split, features=False) -> Predictions`` (member logits, labels,
  agreement; with ``features=True`` also each member's pooled features, from
  :attr:`methods.MethodSetup.features`, compiled on first use).

  For the SVE family, every member's kernels are composed once per pass
  (:func:`sve_jax.ensemble.materialize_kernels`) when that costs less than the cheaper path
  per kernel (``auto``'s choice) on each of ``first``'s batches. The choice is made once, on
  ``first`` (the validation split), and serves every split evaluated; the logits are the
  same either way. Never with ``frozen_layout='fsdp'``: the frozen tree is split because one
  model barely fits a device, and the composed kernels are M models, replicated.
  """
  frozen, trainables = training.frozen, training.state.trainables
  prepare = None
  eval_frozen, eval_trainables = frozen, trainables
  if frozen_layout != 'fsdp' and _materialize_pays_off(setup, backbone, trainables, mesh,
                                                       batch_size, first):
    eval_frozen, eval_trainables = jax.eval_shape(ensemble.materialize_kernels, frozen,
                                                  trainables)
    prepare = jax.jit(ensemble.materialize_kernels, out_shardings=(
        sharding.replicated_shardings(mesh, eval_frozen),
        sharding.per_member_shardings(mesh, eval_trainables)))
    logging.info("evaluation composes every member's kernels once per pass")
  eval_fns = {}

  def eval_fn(features: bool):
    if features not in eval_fns:
      forward = setup.features if features else setup.forward
      if forward is None:
        raise ValueError(f'{setup.name} provides no features forward (MethodSetup.features)')
      eval_fns[features] = sharding.jit_eval_step(steps.make_eval_step(forward), mesh,
                                                  eval_trainables, eval_frozen, frozen_layout)
    return eval_fns[features]

  def predictor(trainables, split: Split, features: bool = False) -> Predictions:
    f, t = prepare(frozen, trainables) if prepare else (frozen, trainables)
    return split_predictions(eval_fn(features), t, f, split, mesh, batch_size)

  return predictor


def make_zero_shot_predictor(backbone, mesh: jax.sharding.Mesh, batch_size: int,
                             frozen_layout: str = 'replicated'
                             ) -> Callable[[Split], Predictions]:
  """``predictor(split) -> Predictions`` of the pretrained backbone itself, as one member
  (logits ``(1, N, C)``): the zero-shot model, before any training. Its params lie as
  ``frozen_layout`` (:func:`sharding.frozen_shardings`).

  Meaningful for a backbone without a fresh head (a decoder scoring its verbaliser's tokens
  with its LM head); a fresh head would score every class alike.
  """
  params = sharding.place(backbone.params,
                          sharding.frozen_shardings(mesh, backbone.params, frozen_layout))
  # Params placed, inputs as split_predictions shards them: jit follows both.
  forward = jax.jit(
      lambda p, inputs: backbone.apply(p, inputs)[None].astype(np.float32),
      out_shardings=jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(None, sharding.DATA)))
  eval_fn = lambda trainables, frozen, inputs, rng: forward(frozen, inputs)
  return lambda split: split_predictions(eval_fn, None, params, split, mesh, batch_size)


def _materialize_pays_off(setup: methods.MethodSetup, backbone: Backbone, trainables,
                          mesh: jax.sharding.Mesh, batch_size: int, split: Split) -> bool:
  """:func:`execution.materialize_pays_off` over ``split``'s batches, with the positions each
  decomposed kernel meets in one batch on one device (abstract evaluation of its first batch).
  """
  if not factorize.layouts(setup.frozen):
    return False
  raw = next(iter(pipeline.eval_batches(split.source, global_batch_size=batch_size,
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count())))
  per_device = max(1, batch_size // mesh.shape[sharding.DATA])
  inputs = jax.tree_util.tree_map(lambda x: np.asarray(x)[:per_device],
                                  split.transform(raw)['inputs'])
  member_0 = jax.tree_util.tree_map(lambda t: jax.ShapeDtypeStruct(t.shape[1:], t.dtype),
                                    trainables)
  positions = execution.kernel_positions(backbone.apply, setup.frozen, member_0, inputs)
  return execution.materialize_pays_off(setup.frozen, positions,
                                        -(-len(split.source) // batch_size))
