"""Methods behind one interface: what is trained per member and how members run.

A method turns a :class:`~sve_jax.models.Backbone` into a :class:`Setup`: the frozen tree, the
initial per-member trainables and a forward ``(frozen, trainables, inputs, rng, train) ->
member_logits (M, B, C)``. The train step, checkpoints and report are shared by all methods.

What each method trains per member (everything else is frozen and shared) and the M it
reports (the leading axis of its evaluation logits):

* ``sve`` (M): singular values of the kernels the backbone's SVE rules decompose, the biases
  of those layers, a head. ``single_svf`` (1): the same with one member.
* ``single_ft`` (1): every backbone param, fresh head, dropout in training.
* ``deep_ensemble`` (M): M such full models, each with its own head, dropout masks and data
  order (:attr:`Setup.per_member_data`).
* ``mc_dropout`` (M): one ``single_ft`` model; M dropout samples at evaluation.
* ``lora_ensemble`` (M): rank-``config.lora_rank`` LoRA on the attention q, k, v, o kernels
  (A Xavier-uniform with gain 10, B = 0), a head.
* ``batch_ensemble`` (M): rank-1 fast weights ``W ⊙ r sᵀ`` on the SVE kernels, the biases of
  those layers, a head.

Each method lives in its own module; all but SVE describe one member's params by
``member_params(frozen, t_m)`` and run members with :func:`base.vmap_forward`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

from sve_jax.methods import base
from sve_jax.methods import batch_ensemble
from sve_jax.methods import deep_ensemble
from sve_jax.methods import lora_ensemble
from sve_jax.methods import mc_dropout
from sve_jax.methods import single_ft
from sve_jax.methods import sve
from sve_jax.methods.base import Setup

_BUILDERS: dict[str, Callable[..., Setup]] = {
    'sve': lambda backbone, config, key: sve.build(
        'sve', backbone, config, key, int(config['num_members'])),
    'single_svf': lambda backbone, config, key: sve.build(
        'single_svf', backbone, config, key, 1),
    'single_ft': single_ft.build,
    'deep_ensemble': deep_ensemble.build,
    'mc_dropout': mc_dropout.build,
    'lora_ensemble': lora_ensemble.build,
    'batch_ensemble': batch_ensemble.build,
}
METHODS = tuple(_BUILDERS)

#: Methods that update every backbone weight, and train at ``full_finetune_learning_rate``.
FULL_FINETUNE = ('single_ft', 'deep_ensemble', 'mc_dropout')
#: Methods that train and report one model.
SINGLE_MODELS = ('single_svf', 'single_ft')
#: Methods that train one model and sample ``config.num_members`` predictions from it.
SAMPLED = ('mc_dropout',)


def num_members_for(method: str, config_members: int) -> int:
  """M as the method reports it: the leading axis of its evaluation logits.

  Single models report M = 1; MC dropout reports its ``config.num_members`` samples.
  """
  return 1 if method in SINGLE_MODELS else int(config_members)


def learning_rate_for(method: str, optim: Mapping[str, Any]) -> float:
  """The peak learning rate ``method`` trains at, from a config's ``optim`` section.

  Full fine-tuning moves every pretrained weight, and the SVE rate (1e-3) makes it diverge
  (a MiniLM-L6 fine-tune at 1e-3 ends at chance accuracy), so the methods of
  :data:`FULL_FINETUNE` take ``optim.full_finetune_learning_rate`` (BERT's usual range,
  2e-5 to 5e-5). Every other method, and full fine-tuning when that field is ``-1``, takes
  ``optim.learning_rate``.
  """
  full = float(optim.get('full_finetune_learning_rate', -1))
  if method in FULL_FINETUNE and full != -1:
    return full
  return float(optim['learning_rate'])


def trained_members_for(method: str, config_members: int) -> int:
  """The leading (member) axis of the method's trainables: the copies it trains."""
  return 1 if method in SINGLE_MODELS + SAMPLED else int(config_members)


def build(method: str, backbone, config: Mapping[str, Any], key: jax.Array) -> Setup:
  """Builds ``method`` on ``backbone`` (``config``: the run's top-level ConfigDict).

  Raises:
    ValueError: an unknown method, or one the backbone cannot run (names the config key).
  """
  if method not in _BUILDERS:
    raise ValueError(f'config.method={method!r} is not a known method; expected one of '
                     f'{METHODS}')
  return _BUILDERS[method](backbone, config, key)


__all__ = ['build', 'METHODS', 'num_members_for', 'SAMPLED', 'Setup', 'SINGLE_MODELS',
           'trained_members_for']
