"""Mesh and shardings: the one place that builds them.

The mesh has two axes: ``data`` (the batch is split over it) and ``member`` (the leading member
axis of trainables and optimiser moments is split over it; size 1 means replicated). Frozen
factors and shared leaves are replicated by default; :func:`fsdp_shardings` instead splits
each leaf over ``data`` (FSDP / ZeRO-3 style: every device holds 1/n of it and XLA gathers
it where it is used), for models whose frozen weights do not fit one device. Steps are plain
``jax.jit`` with these ``NamedSharding``s; there is no pjit/pmap.
"""
from __future__ import annotations

import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sve_jax import choices
from sve_jax.tree import PyTree

DATA = 'data'
MEMBER = 'member'
#: How the frozen tree lies on the mesh (``config.mesh.frozen``): whole on every device, or
#: split FSDP-style over ``data`` (:func:`fsdp_shardings`), for models that do not fit one.
FROZEN_LAYOUTS = ('replicated', 'fsdp')


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
  """``jax.distributed.initialize`` for multi-host runs; a no-op without a coordinator.

  On Cloud TPU and SLURM/Open MPI clusters JAX discovers the arguments itself: pass
  ``coordinator_address='auto'`` there. CPU processes exchange collectives over gloo (TCP),
  so several CPU hosts (or processes on one machine) work too.
  """
  if not coordinator_address:
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if coordinator_address == 'auto':
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def make_mesh(data: int = -1, member: int = 1, devices=None) -> Mesh:
  """A ``(data, member)`` mesh over ``devices`` (default: all).

  Args:
    data: data-parallel size; -1 takes all devices left after ``member``.
    member: member-parallel size; must divide the number of devices.

  Raises:
    ValueError: sizes that do not tile the devices (names the config keys).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if member < 1 or n % member:
    raise ValueError(f'config.mesh.member={member} must be >= 1 and divide the {n} devices')
  if data == -1:
    data = n // member
  if data < 1 or data * member != n:
    raise ValueError(f'config.mesh.data={data} x config.mesh.member={member} must equal the '
                     f'number of devices ({n})')
  return Mesh(np.asarray(devices).reshape(data, member), (DATA, MEMBER))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, per_member: bool = False, steps_axis: bool = False
                   ) -> NamedSharding:
  """A batch's examples split over ``data``.

  Args:
    mesh: the mesh.
    per_member: the batch is member-stacked, ``(M, B, ...)`` (each member its own batch):
      the example axis is then the second one, and the member axis is kept whole.
    steps_axis: the batch stacks several steps' batches on a new leading axis (kept whole),
      as :func:`sve_jax.train.steps.make_multi_step` takes them.
  """
  spec = (None, DATA) if per_member else (DATA,)
  return NamedSharding(mesh, P(*((None,) * steps_axis + spec)))


def _member_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (member) axis split over ``member``."""
  return NamedSharding(mesh, P(MEMBER))


def per_member_shardings(mesh: Mesh, tree: PyTree) -> PyTree:
  """Shardings for a tree whose array leaves all carry a leading member axis.

  Scalars (e.g. optimiser step counts) are replicated.
  """
  return jax.tree_util.tree_map(
      lambda x: _member_sharding(mesh) if np.ndim(x) >= 1 else replicated(mesh), tree)


def replicated_shardings(mesh: Mesh, tree: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda _: replicated(mesh), tree)


def fsdp_sharding(mesh: Mesh, shape: tuple[int, ...], axis: str = DATA) -> NamedSharding:
  """One array split FSDP-style: its largest dimension that ``axis`` divides, over ``axis``.

  Ties go to the earlier dimension. An array with no such dimension (scalars, biases of odd
  size) and every array on a size-1 ``axis`` are replicated.
  """
  n = mesh.shape[axis]
  shape = tuple(int(d) for d in shape)
  fits = [i for i, d in enumerate(shape) if d >= n and d % n == 0]
  if n == 1 or not fits:
    return replicated(mesh)
  split = max(fits, key=lambda i: (shape[i], -i))
  return NamedSharding(mesh, P(*(axis if i == split else None for i in range(len(shape)))))


def fsdp_shardings(mesh: Mesh, tree: PyTree, axis: str = DATA) -> PyTree:
  """:func:`fsdp_sharding` of every array leaf of ``tree`` (arrays or
  ``jax.ShapeDtypeStruct`` s; SVE's frozen tree included: its ``Factored`` nodes' ``u`` and
  ``vh`` are leaves). For frozen weights (in place of :func:`replicated_shardings`) and for a
  single model's full train state, whose leaves have no member axis."""
  return jax.tree_util.tree_map(lambda x: fsdp_sharding(mesh, np.shape(x), axis), tree)


def check_frozen_layout(layout: str, key: str = 'frozen layout') -> None:
  """Raises ValueError naming ``key`` unless ``layout`` is one of :data:`FROZEN_LAYOUTS`."""
  choices.check_choice(layout, FROZEN_LAYOUTS, key)


def frozen_shardings(mesh: Mesh, tree: PyTree, layout: str = 'replicated') -> PyTree:
  """Shardings of a frozen tree (SVE's factors, a backbone's params) laid out as ``layout``:
  :func:`replicated_shardings` or :func:`fsdp_shardings`."""
  check_frozen_layout(layout)
  if layout == 'fsdp':
    return fsdp_shardings(mesh, tree)
  return replicated_shardings(mesh, tree)


def state_shardings(mesh: Mesh, state: PyTree) -> PyTree:
  """Shardings of a :class:`sve_jax.train.state.TrainState` (concrete or abstract).

  ``trainables`` and ``opt_state`` leaves carry the member axis; step and rng are replicated.
  """
  return state.replace(
      step=replicated(mesh), rng=replicated(mesh),
      trainables=per_member_shardings(mesh, state.trainables),
      opt_state=per_member_shardings(mesh, state.opt_state))


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
  """Raises unless the batch splits evenly over the data axis and the processes."""
  data = mesh.shape[DATA]
  if global_batch_size % data:
    raise ValueError(f'config.batch_size={global_batch_size} is not divisible by the '
                     f'{data} data-parallel devices (config.mesh.data)')
  if global_batch_size % jax.process_count():
    raise ValueError(f'config.batch_size={global_batch_size} is not divisible by the '
                     f'{jax.process_count()} processes')


def check_members_divisible(num_members: int, mesh: Mesh) -> None:
  if num_members % mesh.shape[MEMBER]:
    raise ValueError(f'config.num_members={num_members} is not divisible by '
                     f'config.mesh.member={mesh.shape[MEMBER]}')


def shard_batch(local_batch: PyTree, mesh: Mesh, per_member: bool = False,
                steps_axis: bool = False) -> PyTree:
  """Assembles per-process numpy batches into global arrays split over ``data``.

  ``per_member``, ``steps_axis``: see :func:`batch_sharding`.
  """
  sharding = batch_sharding(mesh, per_member, steps_axis)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def to_host(tree: PyTree) -> PyTree:
  """NumPy copies of a tree's arrays, whole even where they are split across processes.

  Collective when an array spans several processes: every process must call it.
  """
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree_util.tree_map(fetch, tree)


def gather_process_slices(local: np.ndarray) -> np.ndarray:
  """Every process's block of a batch (see ``pipeline.eval_dataset``), concatenated in order.

  Collective with several processes; the identity with one.
  """
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def place(tree: PyTree, shardings: PyTree) -> PyTree:
  """``jax.device_put`` of a tree that every process holds whole onto its shardings.

  With several processes jax accepts only host values for a sharding that spans other
  processes (and checks that they are equal everywhere): arrays go through host memory, a
  typed PRNG key as its key data.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)
  return jax.tree_util.tree_map(_put_from_host, tree, shardings)


def _put_from_host(x, sharding: NamedSharding):
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  return jax.device_put(np.asarray(x), sharding)


def jit_train_step(train_step, mesh: Mesh, state: PyTree, frozen: PyTree,
                   per_member_data: bool = False, steps_axis: bool = False,
                   frozen_layout: str = 'replicated'):
  """``jax.jit`` of ``train_step(state, frozen, batch)`` with this mesh's shardings.

  The state is donated (updated in place); frozen factors lie as ``frozen_layout``
  (:func:`frozen_shardings`) and are never donated;
  the batch is split over ``data`` (``per_member_data``: a member-stacked batch;
  ``steps_axis``: several steps' batches, for a multi-step; see :func:`batch_sharding`);
  metrics come back replicated.
  """
  state_sh = state_shardings(mesh, state)
  return jax.jit(
      train_step,
      in_shardings=(state_sh, frozen_shardings(mesh, frozen, frozen_layout),
                    batch_sharding(mesh, per_member_data, steps_axis)),
      out_shardings=(state_sh, replicated(mesh)),
      donate_argnums=(0,))


def jit_eval_step(eval_step, mesh: Mesh, trainables: PyTree, frozen: PyTree,
                  frozen_layout: str = 'replicated'):
  """``jax.jit`` of ``eval_step(trainables, frozen, inputs, rng)``; logits ``(M, B, C)``.
  Frozen factors lie as ``frozen_layout`` (:func:`frozen_shardings`)."""
  return jax.jit(
      eval_step,
      in_shardings=(per_member_shardings(mesh, trainables),
                    frozen_shardings(mesh, frozen, frozen_layout),
                    batch_sharding(mesh), replicated(mesh)),
      out_shardings=NamedSharding(mesh, P(MEMBER, DATA)))
