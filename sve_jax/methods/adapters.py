"""The scaffold of the methods that adapt a frozen backbone's kernels per member.

LoRA-Ensemble and BatchEnsemble keep the backbone frozen and give every member two factor
trees on a set of selected kernels (``A_m, B_m``; ``r_m, s_m``), a function that turns one
kernel's ``(*stack, d_in, d_out)`` matrices and the member's factors into its adapted
matrices, and a few full per-member leaves (a fresh head; BatchEnsemble also copies biases).
:func:`build_adapted` does the rest, alike for both: keys, the initial trainables, the member
params and the vmapped forward.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Callable, Mapping

import jax

from sve_jax import layout as layout_lib
from sve_jax import tree as tree_lib
from sve_jax.methods import base
from sve_jax.tree import PyTree

if TYPE_CHECKING:
  from sve_jax.models import Backbone


@dataclasses.dataclass(frozen=True)
class KernelAdapter:
  """How a method adapts each selected kernel per member.

  Attributes:
    factor_keys: the trainables keys of its two factor trees, e.g. ``('lora_a', 'lora_b')``.
    init_factors: ``key -> ({path: (M, ...)}, {path: (M, ...)})``, both factors of every
      selected kernel for all M members (jitted here).
    adapt: ``(w, first_m, second_m) -> w_m`` on one kernel's ``(*stack, d_in, d_out)``
      float32 matrices, with member ``m``'s two factors of that kernel.
    own_leaves: ``heads -> tree`` of every member's full leaves, given its fresh heads
      (:func:`base.init_heads`, ``(M, ...)``, or ``{}`` for a backbone without a fresh head);
      by default the heads alone. Left out of the trainables when it holds no leaf.
    own_key: the trainables key of those leaves.
    own_prefix: the path under which those leaves replace the backbone's.
  """
  factor_keys: tuple[str, str]
  init_factors: Callable[[jax.Array], tuple[dict, dict]]
  adapt: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
  own_leaves: Callable[[PyTree], PyTree] = lambda heads: heads
  own_key: str = 'head'
  own_prefix: base.Path = ('head',)


def build_adapted(name: str, backbone: Backbone,
                  kernels: Mapping[base.Path, layout_lib.KernelLayout],
                  adapter: KernelAdapter, key: jax.Array,
                  num_members: int) -> base.MethodSetup:
  """The :class:`~sve_jax.methods.base.MethodSetup` of an adapter method.

  Args:
    name: the method.
    backbone: a :class:`sve_jax.models.Backbone`; it stays frozen. Its top-level ``head``, if
      any, is drawn afresh per member; a backbone without one (a decoder scoring label tokens
      with its LM head) shares its head, and ``heads`` below is ``{}``.
    kernels: ``{path: layout}`` of the kernels to adapt (:func:`sve_jax.layout.select`).
    adapter: the method's :class:`KernelAdapter`.
    key: PRNG key; split into the factors' key and the heads' key.
    num_members: M.
  """
  factor_key, head_key = jax.random.split(key)
  first, second = jax.jit(adapter.init_factors)(factor_key)
  heads = base.member_heads(head_key, backbone.params, num_members).get('head', {})
  own = adapter.own_leaves(heads)
  trainables = {adapter.factor_keys[0]: tree_lib.nest(first),
                adapter.factor_keys[1]: tree_lib.nest(second),
                **({adapter.own_key: own} if jax.tree_util.tree_leaves(own) else {})}

  def member_params(frozen: PyTree, t_m: PyTree) -> PyTree:
    weights = tree_lib.flatten_paths(frozen)
    first_m, second_m = (tree_lib.flatten_paths(t_m[k]) for k in adapter.factor_keys)
    adapted = {p: layout_lib.map_matrices(
        weights[p], lay, lambda w, p=p: adapter.adapt(w, first_m[p], second_m[p]))
               for p, lay in kernels.items()}
    own = {adapter.own_prefix + p: v
           for p, v in tree_lib.flatten_paths(t_m.get(adapter.own_key, {})).items()}
    return tree_lib.replace_leaves(frozen, {**own, **adapted})

  return base.make_setup(name, backbone, backbone.params, trainables,
                         functools.partial(base.vmap_forward, member_params=member_params),
                         dropout_in_training=True)
