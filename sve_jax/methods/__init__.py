"""Methods behind one interface: what is trained per member and how members run.

A method turns a :class:`~sve_jax.models.Backbone` into a :class:`Setup`: the frozen tree, the
initial per-member trainables and a forward ``(frozen, trainables, inputs, rng, train) ->
member_logits (M, B, C)``. The train step, checkpoints and report are shared by all methods.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

import sve_jax
from sve_jax import steps

PyTree = Any
METHODS = ('sve', 'single_svf')


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a method trains and how it runs.

  Attributes:
    name: the method.
    frozen: shared, never-updated leaves (for SVE: U, Vᵀ, embeddings, norms).
    trainables: per-member leaves with a leading member axis.
    forward: ``(frozen, trainables, inputs, rng, train) -> (M, B, C)`` logits.
    backbone_params: parameters of the pretrained backbone (for the overhead ratio).
    trainable_per_member: trainable parameters of one member.
  """
  name: str
  frozen: PyTree
  trainables: PyTree
  forward: steps.Forward
  backbone_params: int
  trainable_per_member: int


def num_members_for(method: str, config_members: int) -> int:
  """M as the method runs it (single models report M = 1)."""
  return 1 if method == 'single_svf' else int(config_members)


def build(method: str, backbone, config: Mapping[str, Any], key: jax.Array) -> Setup:
  """Builds ``method`` on ``backbone`` (``config``: the run's top-level ConfigDict)."""
  if method in ('sve', 'single_svf'):
    frozen, s = sve_jax.decompose(backbone.params, rules=backbone.rules)
    members = num_members_for(method, config['num_members'])
    trainables = sve_jax.init_members(key, frozen, s, members, config['noise_std'])
    sve_apply = sve_jax.make_sve_apply(backbone.apply, execution=config['execution'])
    counts = sve_jax.count_params(frozen, trainables)
    return Setup(method, frozen, trainables, steps.sve_forward(sve_apply),
                 counts['backbone'], counts['trainable_per_member'])
  raise ValueError(f'config.method={method!r} is not a known method; expected one of {METHODS}')
