"""SVE on tunix's NNX models, trained by tunix's ``PeftTrainer``.

tunix's decoders (``tunix.models.llama3``, ``gemma3``, ``qwen2``, ``qwen3``) hold their
attention projections as ``Einsum`` modules with head axes (``.../attn/q_proj/w``) and their
MLPs as ``nnx.Linear`` (``.../mlp/gate_proj/kernel``). :data:`TUNIX_RULES` gives each its
layout, one matrix per layer and projection::

  layers/i/attn/{q,k,v}_proj/w        (d, heads, head_dim)     d -> heads·head_dim
  layers/i/attn/o_proj/w              (heads, head_dim, d)     heads·head_dim -> d
  layers/i/attn/q_einsum/w            (heads, d, head_dim)     Gemma 3, as the gemma library
  layers/i/attn/kv_einsum/w           (2, kv_heads, d, head_dim)   k and v: two matrices
  layers/i/attn/qkv_einsum/w          (3, heads, d, head_dim)      q, k and v: three
  layers/i/attn/attn_vec_einsum/w     (heads, head_dim, d)
  layers/i/mlp/{gate,up,down}_proj/kernel   (in, out)
  layers/i/attn/{q,k,v}_bias          per member (Qwen2)

Embeddings, norms, the LM head, a vision encoder and MoE experts stay frozen.

:class:`SVEEnsemble` wraps a tunix model as ``M`` members. Its state is the SVE split of the
model's state (:func:`sve_jax.decompose`): ``frozen`` (an :class:`SVEFrozen` variable: U and
Vᵀ of every decomposed kernel, and every other weight) and ``members`` (one
``nnx.LoRAParam`` per trainable leaf, ``(M, ...)``: singular values, biases). tunix's
``PeftTrainer`` trains the ``LoRAParam`` variables of any model that has some, and its
checkpoints hold only those, so it trains and saves exactly the SVE trainables::

  ensemble = SVEEnsemble(model, num_members=4, key=jax.random.key(0))
  trainer = peft_trainer.PeftTrainer(ensemble, optax.adamw(1e-3), config)
  trainer = trainer.with_loss_fn(sve_loss_fn)     # mean over members of their token loss
  trainer.train(train_ds)
  member_logits, _ = ensemble(tokens, positions, None, attention_mask)   # (M, B, T, V)
  probs = sve_jax.ensemble_probs(member_logits)                        # (B, T, V)

The forward runs the members under one ``jax.vmap`` over their trainables
(:func:`sve_jax.make_sve_apply`), all reading the same batch, each rebuilding its kernels
``U diag(s_m) Vᵀ`` (the compose path) and calling the tunix model on them. The member axis
under ``vmap`` is kept rather than the batch repeated per member because both compile to the
same matrix products and take the same time (forward and backward of a 4-layer, d = 256
Llama 3, ``M = 4``, 4 × 64 tokens, 2 CPU cores beside another job, so not a quiet timing:
721 ms against 730 ms, medians of 9), and the shared batch looks its tokens up once
instead of ``M`` times.
"""
from __future__ import annotations

import re
from typing import Any

from flax import nnx
import jax

import sve_jax
from sve_jax import factorize
from sve_jax import layout as layout_lib
from sve_jax.models import llama
from sve_jax.train import steps
from sve_jax.tree import PyTree

#: Llama 3's and Qwen2/3's attention ``Einsum`` kernels: ``{name: (in_axes, out_axes)}``.
ATTENTION_EINSUMS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    'q_proj': ((0,), (1, 2)),   # 'BTD,DNH->BTNH'
    'k_proj': ((0,), (1, 2)),   # 'BSD,DKH->BSKH'
    'v_proj': ((0,), (1, 2)),
    'o_proj': ((0, 1), (2,)),   # 'BTNH,NHD->BTD'
}
_LAYER = r'^layers/\d+/'
_EINSUM = re.compile(_LAYER + r'attn/(' + '|'.join(ATTENTION_EINSUMS) + r')/w$')
_MLP_KERNEL = re.compile(_LAYER + r'mlp/(gate|up|down)_proj/kernel$')
_BIAS = re.compile(_LAYER + r'(attn/(q|k|v)_bias|mlp/(gate|up|down)_proj/bias)$')


def tunix_role(path: str, leaf: Any) -> layout_lib.Role:
  """SVE role of one leaf of a tunix decoder's state (see the module docstring).

  Decoder layers' attention and MLP projections are decomposed, their biases trained per
  member; Gemma 3's einsums take :func:`sve_jax.models.llama.gemma_role`'s layouts. Everything
  else (embedder, norms, LM head, vision encoder, MoE experts and router) is frozen.
  """
  match = _EINSUM.search(path)
  if match:
    in_axes, out_axes = ATTENTION_EINSUMS[match.group(1)]
    return layout_lib.Decompose(in_axes=in_axes, out_axes=out_axes)
  if _MLP_KERNEL.search(path):
    return layout_lib.DECOMPOSE
  if _BIAS.search(path):
    return layout_lib.MEMBER
  if re.search(_LAYER + 'attn/', path):
    return llama.gemma_role(path, leaf)
  return layout_lib.FROZEN


#: SVE rules for tunix decoders (a callable rule, :func:`tunix_role`).
TUNIX_RULES = tunix_role


class SVEFrozen(nnx.Variable):
  """The shared, frozen part of an SVE ensemble: :func:`sve_jax.decompose`'s ``frozen`` tree.

  Neither a ``Param`` nor a ``LoRAParam``: an optimiser over either never touches it.
  """


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


class SVEEnsemble(nnx.Module):
  """A tunix model as an ensemble of ``M`` SVE members (see the module docstring).

  Calling it calls the wrapped model once per member, under one ``jax.vmap``, with that
  member's weights: every output gains a leading member axis, e.g. ``(logits, cache)`` with
  logits ``(M, B, T, V)``. Sampling with a KV cache is not supported; use
  :meth:`member_model` for one member's plain tunix model.

  Attributes:
    frozen: :class:`SVEFrozen` holding the ``frozen`` tree of :func:`sve_jax.decompose`.
    members: the trainables of :func:`sve_jax.init_members` as a nested dict (keyed by the
      model's path components) of ``nnx.LoRAParam``, each with a leading member axis.
  """

  def __init__(self, model: nnx.Module, num_members: int, *, key: jax.Array,
               noise_std: float = 0.01, rules: layout_lib.Rules = TUNIX_RULES):
    """Decomposes ``model``'s state once and initialises the members.

    Args:
      model: a tunix model (or any nnx model whose call the members share).
      num_members: ``M >= 1``.
      key: PRNG key of the members' initial noise.
      noise_std: σ_init (:func:`sve_jax.init_members`); 0 makes every member the model.
      rules: which leaves are decomposed, trained per member or frozen
        (:func:`sve_jax.decompose`); mark a task head ``'member'`` to train it per member.

    Raises:
      ValueError: ``num_members < 1``, or the rules decompose no leaf of the model.
      LayoutError: a decomposed leaf does not fit its layout (names the path).
    """
    if int(num_members) < 1:  # checked before the SVD, which takes seconds on a real model
      raise ValueError(f'SVEEnsemble: num_members must be >= 1, got {num_members}')
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    frozen, s = sve_jax.decompose(params, rules)
    if not factorize.layouts(frozen):
      raise ValueError(
          f'SVEEnsemble: the rules decompose none of the {len(jax.tree.leaves(params))} '
          f'weights of {type(model).__name__}, so SVE has no singular values to train; pass '
          'rules= that match its projection kernels (see TUNIX_RULES)')
    trainables = sve_jax.init_members(key, frozen, s, num_members, noise_std)
    self.graphdef = graphdef
    # The state's own tree (its Variables and their metadata) around a member's leaves;
    # ``params`` flattens in the same order, so leaves move across by position.
    self.state_def = jax.tree.structure(state)
    self.frozen = SVEFrozen(frozen)
    self.members = nnx.data(jax.tree.map(nnx.LoRAParam, trainables))

  def trainables(self) -> dict:
    """The members' values as a plain tree: :func:`sve_jax.init_members`'s trainables."""
    return jax.tree.map(lambda v: v.get_value(), self.members, is_leaf=_is_variable)

  def sve_params(self) -> dict:
    """``{'frozen': ..., 'trainables': ...}``, the params of :func:`sve_jax.make_sve_apply`
    (and of :func:`sve_jax.count_params` as two arguments)."""
    return {'frozen': self.frozen.get_value(), 'trainables': self.trainables()}

  def _model(self, params: PyTree) -> nnx.Module:
    """The wrapped model with the plain params tree ``params``."""
    state = jax.tree.unflatten(self.state_def, jax.tree.leaves(params))
    return nnx.merge(self.graphdef, state)

  def __call__(self, *args, **kwargs) -> Any:
    """The wrapped model's call, once per member: its outputs with a leading axis ``M``."""
    apply = lambda params, *a, **k: self._model(params)(*a, **k)
    return sve_jax.make_sve_apply(apply)(self.sve_params(), *args, **kwargs)

  def member_model(self, m: int) -> nnx.Module:
    """Member ``m`` as a plain model of the wrapped type (its kernels composed once)."""
    t_m = jax.tree.map(lambda t: t[m], self.trainables())
    return self._model(sve_jax.compose(self.frozen.get_value(), t_m))


def member_token_losses(member_logits: jax.Array, input_tokens: jax.Array,
                        input_mask: jax.Array) -> jax.Array:
  """Each member's next-token cross-entropy, masked as tunix's default PEFT loss masks it.

  Args:
    member_logits: ``(M, B, T, V)``.
    input_tokens: ``(B, T)``; position ``t + 1`` is the target of the logits at ``t``.
    input_mask: ``(B, T)``, true at the tokens to predict.

  Returns:
    ``(M,)``: the mean cross-entropy over the targets the mask keeps, per member.
  """
  logits = member_logits[:, :, :-1]
  flat = logits.reshape(logits.shape[0], -1, logits.shape[-1])
  return steps.member_cross_entropy(flat, input_tokens[:, 1:].reshape(-1),
                                    input_mask[:, 1:].reshape(-1))


def sve_loss_fn(model: SVEEnsemble, input_tokens: jax.Array, input_mask: jax.Array,
                positions: jax.Array, attention_mask: jax.Array,
                images: jax.Array | None = None) -> jax.Array:
  """``PeftTrainer``'s loss for an SVE ensemble: the mean over members of each member's loss.

  It takes the inputs of tunix's default PEFT loss (``trainer.with_loss_fn(sve_loss_fn)``),
  and each member's loss is that default loss of the member alone
  (:func:`member_token_losses`): every member trains independently, as in
  :func:`sve_jax.train.steps.ensemble_loss`.
  """
  kwargs = {} if images is None else {'images': images}
  member_logits, _ = model(input_tokens, positions, None, attention_mask, **kwargs)
  return member_token_losses(member_logits, input_tokens, input_mask).mean()

