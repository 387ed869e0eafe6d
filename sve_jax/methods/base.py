"""What every method shares: its :class:`Method` record, :class:`MethodOptions`, the
:class:`MethodSetup`, the forward, heads.

A method is a way of turning one backbone into M members. Each method module defines a
``build(backbone, options, key) -> MethodSetup`` (``options``: the :class:`MethodOptions` a
run's config holds, :meth:`MethodOptions.from_config`) and one :class:`Method` record with
the facts the run needs (how many members it reports and trains, its learning-rate group);
the registry in :mod:`sve_jax.methods` lists the records. Every method describes member ``m``'s ordinary
params the same way, from the shared ``frozen`` tree and its own slice ``t_m`` of the
trainables (:data:`sve_jax.ensemble.MemberParams`)::

  member_params(frozen, t_m) -> params        # params for backbone.apply

and :func:`vmap_forward` (or, for SVE, :func:`sve_jax.make_sve_apply`) runs all members with
one ``jax.vmap`` (:func:`sve_jax.ensemble.vmap_members`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from sve_jax import ensemble
from sve_jax import tree as tree_lib
from sve_jax.tree import PyTree

if TYPE_CHECKING:
  from sve_jax.models import Backbone

Path = tree_lib.Path
#: A method's forward, what the train and eval steps call:
#: ``forward(frozen, trainables, inputs, rng, train) -> member_logits (M, B, C)``; ``rng``
#: feeds stochastic layers (dropout) and ``train`` says whether the step trains.
Forward = Callable[[PyTree, PyTree, Any, jax.Array, bool], jax.Array]
#: The same forward run on :meth:`sve_jax.models.Backbone.apply_with_features`:
#: ``features(frozen, trainables, inputs, rng, train) -> (member_logits (M, B, C),
#: member_features (M, B, D))``, each member's logits and the pooled features its head read
#: (OOD scores in feature space, :mod:`sve_jax.eval.feature_ood`). Evaluation calls it with
#: ``train=False``.
FeaturesForward = Callable[[PyTree, PyTree, Any, jax.Array, bool],
                           tuple[jax.Array, jax.Array]]



class PosteriorData(NamedTuple):
  """What a method's post-training posterior (:attr:`MethodSetup.fit_posterior`) is fitted
  and tuned on; the run supplies it.

  Attributes:
    batches: one pass over a training subset, as ``{'inputs', 'mask'}`` batches (evaluation
      transform, no augmentation; ``mask`` marks real examples, not padding).
    num_train: the examples of the whole training split: the likelihood's size, to which
      the subset's curvature is scaled.
    validation_nll: ``trainables -> float``: the ensemble NLL on the validation split of
      member trainables (leading axis: the members the method reports).
    key: PRNG key of the posterior's draws.
  """
  batches: Iterable[dict]
  num_train: int
  validation_nll: Callable[[PyTree], float]
  key: jax.Array


class Posterior(NamedTuple):
  """A fitted posterior, as evaluation uses it.

  Attributes:
    trainables: the members to evaluate (leading axis: the members the method reports).
    info: what results.json records of the fit (its ``posterior`` section).
  """
  trainables: PyTree
  info: dict[str, Any]


#: ``fit_posterior(frozen, trainables, data) -> Posterior``: a method's step after training,
#: from the trained (best checkpoint's) trainables and :class:`PosteriorData` to the members
#: its evaluation reports.
FitPosterior = Callable[[PyTree, PyTree, PosteriorData], Posterior]

#: Standard deviation of the fresh per-member heads of the baselines (the paper's head
#: initialisation, weights ``N(0, 0.01²)``, bias 0; ``docs/method.md``).
HEAD_STD = 0.01
#: The ``config.optim`` field of the learning rate of methods that update every pretrained
#: weight; the SVE rate (1e-3) makes them diverge (a MiniLM-L6 fine-tune at 1e-3 ends at
#: chance accuracy), so they take BERT's usual range, 2e-5 to 5e-5.
FULL_FINETUNE_LEARNING_RATE = 'full_finetune_learning_rate'
#: The ``config.optim`` field of LoRA-Ensemble's learning rate: its B matrices start at zero
#: and the adapted attention collapses at SVE's 1e-2.
LORA_LEARNING_RATE = 'lora_learning_rate'


@dataclasses.dataclass(frozen=True)
class MethodOptions:
  """What the methods read of a run's config: the same keys (``--config.noise_std``, ...),
  typed and frozen. Each method reads the fields it documents and ignores the others.

  Attributes:
    num_members: M, the members an ensemble method trains and reports (``mc_dropout``: its
      test-time dropout samples).
    noise_std: σ_init of SVE's singular values and per-member leaves, and of
      BatchEnsemble's fast weights.
    execution: SVE's execution path, ``'compose'``, ``'factored'`` or ``'auto'``.
    lora_rank: LoRA-Ensemble's adapter rank (alpha = rank).
    head_init_std: SVE: ``>= 0`` draws each member's head ``N(0, head_init_std²)`` apart
      from ``noise_std``; ``-1`` keeps it tied to ``noise_std``.
    member_data_order: SVE: member ``m`` trains on its own batch stream.
    sve_dropout: SVE: run the backbone's dropout in training.
    sve_targets: SVE family: ``'all'`` decomposes the backbone's ``rules`` (every attention
      and MLP projection); ``'attention'`` its ``attention_rules`` only (the paper's
      attention-only ablation; the MLPs stay frozen).
    laplace_prior_precisions: Laplace-LoRA: the grid of prior precisions its posterior
      chooses from on the validation split.
  """
  num_members: int
  noise_std: float = 0.01
  execution: str = 'auto'
  lora_rank: int = 8
  head_init_std: float = -1.
  member_data_order: bool = False
  sve_dropout: bool = False
  sve_targets: str = 'all'
  laplace_prior_precisions: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1., 10., 100., 1e3,
                                                 1e4, 1e5, 1e6)

  @classmethod
  def defaults(cls) -> dict[str, Any]:
    """``{field: default}`` of every field that has one: the one place configs/common.py
    takes the methods' default settings from."""
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> MethodOptions:
    """The options of a run's top-level config (a ConfigDict or a mapping); a key the config
    lacks takes the field's default."""
    values = {f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config}
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class MethodSetup:
  """What a method trains and how it runs: one backbone made into M members.

  Attributes:
    name: the method.
    frozen: shared, never-updated leaves (for SVE: U, Vᵀ, embeddings, norms).
    trainables: per-member leaves with a leading member axis.
    forward: ``(frozen, trainables, inputs, rng, train) -> (M, B, C)`` logits.
    backbone_params: parameters of the pretrained backbone, head included.
    trainable_per_member: trainable parameters of one member.
    per_member_data: whether training feeds member ``m`` its own batch: then inputs are
      ``(M, B, ...)`` and labels ``(M, B)`` with ``train=True``; evaluation always feeds every
      member the same ``(B, ...)`` inputs.
    pretrained_s: SVE only: the pretrained singular values and per-member leaves (the ``s``
      of :func:`sve_jax.decompose`), to measure how far training moved the members.
    features: ``forward`` that also returns each member's pooled features
      (:data:`FeaturesForward`); ``None`` where a method does not provide it.
    fit_posterior: a step after training (:data:`FitPosterior`) whose members, not the
      trained trainables, the final evaluation reports; ``None`` for methods that report
      what they trained.
    dropout_in_training: whether its training forward draws the backbone's dropout masks
      (the trunk's output then changes every step: no trunk cache).
  """
  name: str
  frozen: PyTree
  trainables: PyTree
  forward: Forward
  backbone_params: int
  trainable_per_member: int
  per_member_data: bool = False
  pretrained_s: PyTree | None = None
  features: FeaturesForward | None = None
  fit_posterior: FitPosterior | None = None
  dropout_in_training: bool = False

  @property
  def trainable_total(self) -> int:
    """Trainable parameters of the whole ensemble (all copies in ``trainables``)."""
    return tree_lib.num_params(self.trainables)


def make_setup(name: str, backbone: Backbone, frozen: PyTree, trainables: PyTree,
               make_forward: Callable[[Callable[..., Any]], Callable], *,
               per_member_data: bool = False,
               pretrained_s: PyTree | None = None,
               dropout_in_training: bool = False) -> MethodSetup:
  """A :class:`MethodSetup` whose counts come from ``backbone.params`` and ``trainables``.

  Args:
    name: the method.
    backbone: the backbone the members are made of.
    frozen: the shared, never-updated leaves.
    trainables: the per-member leaves (leading member axis).
    make_forward: ``apply_fn -> forward``: the method's forward built on a backbone forward
      with :meth:`~sve_jax.models.Backbone.apply`'s signature. It is called twice: on
      ``backbone.apply`` for :attr:`MethodSetup.forward` and on
      ``backbone.apply_with_features`` for :attr:`MethodSetup.features`, so both run the
      members alike.
    per_member_data: see :attr:`MethodSetup.per_member_data`.
    pretrained_s: see :attr:`MethodSetup.pretrained_s`.
    dropout_in_training: whether the forward runs the backbone's dropout in training; a
      backbone without dropout (rate 0) has none to run either way.
  """
  per_member = tree_lib.num_params(trainables) // ensemble.member_axis_size(trainables)
  return MethodSetup(name, frozen, trainables, make_forward(backbone.apply),
                     tree_lib.num_params(backbone.params), per_member, per_member_data,
                     pretrained_s, features=make_forward(backbone.apply_with_features),
                     dropout_in_training=dropout_in_training and backbone.dropout_rate > 0)


@dataclasses.dataclass(frozen=True)
class Method:
  """A method's facts, as the run uses them, next to its builder.

  Attributes:
    name: the method's ``config.method``.
    build: ``(backbone, options, key) -> MethodSetup`` (``options``: :class:`MethodOptions`).
    reports_ensemble: whether it reports ``config.num_members`` members (the leading axis of
      its evaluation logits); otherwise one model (M = 1).
    trains_ensemble: whether it trains ``config.num_members`` copies (the member axis of its
      trainables); otherwise one (MC dropout samples its members from one model).
    learning_rate_key: the ``config.optim`` field of its peak learning rate:
      ``'learning_rate'``, :data:`FULL_FINETUNE_LEARNING_RATE` for methods that update
      every pretrained weight, or :data:`LORA_LEARNING_RATE`.
    adapts_by_rules: whether what it trains comes from the backbone's rules (SVE, LoRA,
      BatchEnsemble), so that ``config.model.adapted_blocks`` can restrict it to the top
      blocks; methods that update every weight (single_ft, deep_ensemble, mc_dropout) do
      not, and refuse it (:meth:`check_adapted_blocks`).
  """
  name: str
  build: Callable[[Any, MethodOptions, jax.Array], MethodSetup]
  reports_ensemble: bool = True
  trains_ensemble: bool = True
  learning_rate_key: str = 'learning_rate'
  adapts_by_rules: bool = True

  def check_adapted_blocks(self, adapted_blocks: int) -> None:
    """Raises ValueError (naming ``config.model.adapted_blocks``) when a method that updates
    every weight is asked to adapt only the top blocks."""
    if int(adapted_blocks) != -1 and not self.adapts_by_rules:
      raise ValueError(f'config.model.adapted_blocks={adapted_blocks}: {self.name} trains '
                       'every weight of the backbone, so it cannot adapt only the top blocks; '
                       'use -1, or a method that adapts by the backbone\'s rules (sve, '
                       'single_svf, lora_ensemble, batch_ensemble, laplace_lora)')

  def reported_members(self, config_members: int) -> int:
    """M as the method reports it: the leading axis of its evaluation logits."""
    return int(config_members) if self.reports_ensemble else 1

  def trained_copies(self, config_members: int) -> int:
    """The leading (member) axis of the method's trainables: the models it trains."""
    return int(config_members) if self.trains_ensemble else 1

  def learning_rate(self, optim: Mapping[str, Any]) -> float:
    """The peak learning rate from a config's ``optim`` section.

    ``optim[learning_rate_key]``; where that field is absent or ``-1``,
    ``optim.learning_rate``.
    """
    rate = float(optim.get(self.learning_rate_key, -1))
    return rate if rate != -1 else float(optim['learning_rate'])


# --------------------------------------------------------------------------------------------
# The forward.
# --------------------------------------------------------------------------------------------


def vmap_forward(apply_fn: Callable[..., jax.Array], member_params: ensemble.MemberParams, *,
                 per_member_data: bool = False) -> Forward:
  """Runs every member under one ``jax.vmap`` (:func:`sve_jax.ensemble.vmap_members`).

  Member ``m`` computes ``apply_fn(member_params(frozen, trainables[m]), inputs_m,
  train=train, rngs={'dropout': rng_m})`` with ``rng_m = jax.random.split(rng, M)[m]`` (its
  own dropout masks) and ``inputs_m = inputs[m]`` when ``per_member_data and train``, else the
  shared ``inputs``.

  Args:
    apply_fn: the backbone's ``(params, inputs, *, train, rngs) -> logits``
      (:meth:`sve_jax.models.Backbone.apply`).
    member_params: ``(frozen, t_m) -> params`` for one member.
    per_member_data: whether training inputs carry a leading member axis.

  Returns:
    ``forward(frozen, trainables, inputs, rng, train) -> (M, B, C)``.
  """
  shared = ensemble.vmap_members(apply_fn, member_params)
  own = ensemble.vmap_members(apply_fn, member_params, per_member_args=True)

  def forward(frozen, trainables, inputs, rng, train):
    members = own if per_member_data and train else shared
    return members(frozen, trainables, inputs, train=train, rngs={'dropout': rng})

  return forward


# --------------------------------------------------------------------------------------------
# Trees.
# --------------------------------------------------------------------------------------------


def identical_copies(tree: PyTree, num_copies: int) -> PyTree:
  """``num_copies`` identical copies of every leaf along a new leading (member) axis."""
  return jax.tree_util.tree_map(
      lambda x: jnp.broadcast_to(x, (num_copies,) + jnp.shape(x)), tree)


def unstack_first(tree: PyTree) -> PyTree:
  """Member 0 of a tree with a leading member axis."""
  return jax.tree_util.tree_map(lambda x: x[0], tree)


def member_keys(key: jax.Array, num_members: int) -> jax.Array:
  """``(M,)`` keys, member ``m``'s being ``jax.random.fold_in(key, m)`` (independent of M)."""
  return jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(num_members))


@functools.partial(jax.jit, static_argnums=(2, 3))
def init_heads(key: jax.Array, head: PyTree, num_members: int,
               std: float = HEAD_STD) -> PyTree:
  """Fresh per-member heads: kernels ``N(0, std²)``, every other leaf (bias) 0.

  Member ``m`` draws from its own key (:func:`member_keys`), so its head does not depend on
  M.

  Args:
    key: PRNG key.
    head: one head's params (leaves named ``kernel`` are drawn, others zeroed).
    num_members: M.
    std: the kernels' standard deviation.

  Returns:
    ``head``'s tree with a leading member axis of size M on every leaf.
  """
  keys = member_keys(key, num_members)
  flat, treedef = jax.tree_util.tree_flatten_with_path(head)
  leaves = []
  for i, (keypath, leaf) in enumerate(flat):
    shape, dtype = jnp.shape(leaf), jnp.asarray(leaf).dtype
    if tree_lib.keypath_to_path(keypath)[-1] == 'kernel':
      draw = lambda k, i=i, shape=shape, dtype=dtype: std * jax.random.normal(
          jax.random.fold_in(k, i), shape, dtype)
      leaves.append(jax.vmap(draw)(keys))
    else:
      leaves.append(jnp.zeros((num_members,) + shape, dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def member_heads(key: jax.Array, params: Mapping[str, Any], num_members: int,
                 std: float = HEAD_STD) -> dict[str, PyTree]:
  """``{'head': fresh per-member heads}`` (:func:`init_heads`), or ``{}`` for a backbone
  without a fresh head.

  A decoder that classifies by prompt (:mod:`sve_jax.models.llama`) scores the verbaliser's
  tokens with the LM's own head: every member shares that pretrained head, and a method adds
  nothing for it.
  """
  if 'head' not in params:
    return {}
  return {'head': init_heads(key, params['head'], num_members, std)}
