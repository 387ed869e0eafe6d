"""Deterministic, resumable, multi-host batching over random-access sources, on grain.

A *source* is anything with `__len__` and `__getitem__(int) -> dict` (a tfds
`data_source` split, a `Subset`, a list of dicts). Batches are `grain.MapDataset`s
with one element per global step, built from the indices alone:

  range(N) -> shuffle (per epoch) -> drop the epoch's remainder -> repeat
    -> batch (per-process size) -> this process's batches -> read -> transform

* the order of epoch `e` is grain's index shuffle seeded `(h(seed) + e) mod 2**32`,
  `h(seed)` a hash of the seed (`_epoch_order`): a function of `(seed, epoch)`, and
  seeds `s` and `s + 1` (ensemble members) do not share epochs, as `seed + e` would;
* every process computes the same global batches and keeps its own contiguous
  block of each (`[process_index::process_count]` of the per-process batches);
* augmentation draws from per-example seeds of `(seed, epoch, index)`
  (`example_seeds`), so an example is augmented the same way after a restart;
* a batch is read in one call: `read_examples` uses the source's
  `__getitems__` (tfds reads a batch of records much faster that way), which
  grain's own per-record reads would not.

`iterate` runs a dataset; its iterator's `get_state()` (`{'next_index': step}` when
read in this process; grain's interleave state with worker processes; the same on
every process either way) goes into the checkpoint, and `iterate(..., state=...)`
continues with exactly the batches an uninterrupted run gets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np

Batch = dict[str, Any]
Source = Sequence[dict[str, Any]]
Transform = Callable[[Batch], Batch]

# Independent random streams derived from one user seed.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1
_SUBSAMPLE_STREAM = 2
# Grain reads in the calling thread: no prefetch threads, so a transform (e.g. a stateful
# tokenizer shared by the train and eval transforms) never runs in two threads at once.
_IN_PROCESS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


# ---------------------------------------------------------------- sizes


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  """The per-process share of a global batch; it must divide evenly."""
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global batch size {global_batch_size} must be positive '
                     f'and divisible by the process count {process_count}.')
  return global_batch_size // process_count


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full training batches per epoch (the remainder is dropped)."""
  steps = num_examples // global_batch_size
  if steps == 0:
    raise ValueError(f'{num_examples} examples do not fill one batch of '
                     f'{global_batch_size}.')
  return steps


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  """Global evaluation batches needed to cover every example once."""
  return -(-num_examples // global_batch_size)


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count}).')


def _process_batches(positions: grain.MapDataset, global_batch_size: int,
                     process_index: int, process_count: int) -> grain.MapDataset:
  """Batches of `global_batch_size` consecutive positions, this process's block of each.

  Global batch `k` is per-process batches `k * P ... k * P + P - 1`, in process order (as
  `sharding.shard_batch` lays a batch out over processes); process `p` keeps the `p`-th.
  """
  _check_process(process_index, process_count)
  local = _local_batch_size(global_batch_size, process_count)
  return positions.batch(local)[process_index::process_count]


# ---------------------------------------------------------------- training


def _epoch_order(num_examples: int, seed: int) -> grain.MapDataset:
  """Source indices in training order: element `e * N + j` is epoch `e`'s `j`-th example.

  Its length is one epoch, `N`; later epochs are read past the end, as grain's `slice` and
  `repeat` do. Each epoch is a permutation of `range(N)`: grain reseeds its shuffle per
  epoch with `(h(seed) + epoch) mod 2**32`, where `h` hashes `seed` so that the streams of
  seeds `s` and `s + 1` (ensemble members) do not meet one epoch apart.
  """
  shuffle_seed = int(np.random.SeedSequence([_SHUFFLE_STREAM, seed]).generate_state(1)[0])
  return grain.MapDataset.range(num_examples).shuffle(seed=shuffle_seed)


def example_seeds(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
  """Per-example augmentation seeds, `(len(indices), 2)` uint32.

  Row i depends only on `(seed, epoch, indices[i])`: an example is augmented
  the same way whatever batch, process or restart it is read in.
  """
  return np.stack([
      np.random.SeedSequence([_AUGMENT_STREAM, seed, epoch, int(i)]).generate_state(2)
      for i in indices]).astype(np.uint32).reshape(len(indices), 2)


def train_dataset(source: Source, *, global_batch_size: int, seed: int,
                  num_epochs: int | None = None, process_index: int = 0,
                  process_count: int = 1,
                  transform: Transform | None = None) -> grain.MapDataset:
  """Shuffled training batches, one element per global step.

  Each epoch visits `steps_per_epoch` full global batches in `_epoch_order(seed)`; the
  epoch's last partial batch is dropped. This process gets its block of each. Besides
  the source features a batch has `index` (source indices, int64) and `example_seed`
  (see `example_seeds`), then `transform` is applied.

  Args:
    source: the training split.
    global_batch_size: examples per step over all processes.
    seed: shuffling and augmentation seed.
    num_epochs: the number of epochs; `None` repeats forever.
    process_index: this process (`jax.process_index()`).
    process_count: all processes (`jax.process_count()`).
    transform: `batch -> batch`, e.g. from `transforms.make_transform`.

  Returns:
    A `grain.MapDataset` of `steps_per_epoch * num_epochs` batches; run it with `iterate`.
  """
  steps = steps_per_epoch(len(source), global_batch_size)
  positions = _epoch_order(len(source), seed)[:steps * global_batch_size].repeat(num_epochs)
  batches = _process_batches(positions, global_batch_size, process_index, process_count)
  return batches.map_with_index(functools.partial(_read_train_batch, source, seed, steps,
                                                  transform))


def _read_train_batch(source: Source, seed: int, steps: int, transform: Transform | None,
                      step: int, indices: np.ndarray) -> Batch:
  """Global step `step`'s examples at `indices`, with `index` and `example_seed`."""
  indices = np.asarray(indices, np.int64)
  batch = _read_batch(source, indices)
  batch['index'] = indices
  batch['example_seed'] = example_seeds(seed, step // steps, indices)
  return transform(batch) if transform else batch


def member_train_dataset(source: Source, *, seeds: Sequence[int],
                         **kwargs) -> grain.MapDataset:
  """One `train_dataset` per member, seeded `seeds[m]`, stacked on a leading member axis.

  The members' streams have the same length and advance together (one element holds
  step `k` of each), so one iterator state resumes them all. `kwargs`: those of
  `train_dataset` but `seed`.
  """
  streams = [train_dataset(source, seed=seed, **kwargs) for seed in seeds]
  return grain.experimental.ZipMapDataset(streams).map(_stack_members)


def _stack_members(batches: Sequence[Any]) -> Any:
  """Stacks same-structured (nested dicts of) batches on a new leading axis."""
  if isinstance(batches[0], Mapping):
    return {key: _stack_members([batch[key] for batch in batches]) for key in batches[0]}
  return np.stack([np.asarray(batch) for batch in batches])


# ---------------------------------------------------------------- evaluation


def eval_dataset(source: Source, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1,
                 transform: Transform | None = None) -> grain.MapDataset:
  """Every example exactly once, in source order, in fixed-size batches.

  Global batch `k` holds examples `k * B ... k * B + B - 1`; the last one is padded (with
  copies of example 0) to full size, `mask` False and `index` -1 there. Every process gets
  `num_eval_batches` batches, so collective ops stay in step.
  """
  num_examples = len(source)
  if num_examples == 0:
    raise ValueError('cannot evaluate on an empty source.')
  padded = num_eval_batches(num_examples, global_batch_size) * global_batch_size
  batches = _process_batches(grain.MapDataset.range(padded), global_batch_size,
                             process_index, process_count)
  return batches.map(functools.partial(_read_eval_batch, source, transform))


def _read_eval_batch(source: Source, transform: Transform | None,
                     positions: np.ndarray) -> Batch:
  """The examples at `positions`; those past the end are padding (`mask` False)."""
  positions = np.asarray(positions, np.int64)
  mask = positions < len(source)
  batch = _read_batch(source, np.where(mask, positions, 0))
  batch['index'] = np.where(mask, positions, -1)
  batch['mask'] = mask
  return transform(batch) if transform else batch


def eval_batches(source: Source, **kwargs) -> Iterator[Batch]:
  """`iterate(eval_dataset(source, **kwargs))`: evaluation batches, read in this process."""
  return iterate(eval_dataset(source, **kwargs))


# ---------------------------------------------------------------- running


def iterate(dataset: grain.MapDataset, *, num_workers: int = 0,
            state: Mapping[str, Any] | None = None) -> grain.DatasetIterator:
  """A resumable iterator over `dataset`.

  Args:
    dataset: e.g. from `train_dataset` or `eval_dataset`.
    num_workers: 0 reads and transforms in this process; more prepare batches in that
      many grain worker processes (spawned: each imports the project and unpickles the
      source and transform; under absl, after flags are parsed). The batches are the
      same either way; the state's form depends on the worker count.
    state: a `get_state()` of an iterator over the same dataset; iteration continues
      with the batch that iterator would have produced next.

  Returns:
    A `grain.DatasetIterator`; save its `get_state()` to resume. `close()` it when done
    with workers.
  """
  iter_dataset = dataset.to_iter_dataset(_IN_PROCESS)
  if num_workers:
    iter_dataset = iter_dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers))
  iterator = iter(iter_dataset)
  if state is not None:
    iterator.set_state(dict(state))
  return iterator


# ---------------------------------------------------------------- reading


def _collate(examples: Sequence[dict[str, Any]]) -> Batch:
  """Stacks a list of examples into a batch, key by key.

  Numeric or boolean values of one shape are stacked into an array; anything
  else (text as `bytes`/`str`, images of differing sizes) stays a list.
  """
  batch = {}
  for key in examples[0]:
    values = [example[key] for example in examples]
    arrays = [np.asarray(value) for value in values]
    if (all(a.dtype.kind in 'biuf' for a in arrays)
        and len({a.shape for a in arrays}) == 1):
      batch[key] = np.stack(arrays)
    else:
      batch[key] = values
  return batch


def _read_batch(source: Source, indices: np.ndarray) -> Batch:
  """Reads `source[i]` for each index and collates them."""
  return _collate(read_examples(source, indices))


# ---------------------------------------------------------------- sources


class Subset(Sequence):
  """A read-only view of `source` at `indices` (e.g. a capped training set)."""

  def __init__(self, source: Source, indices: Sequence[int]):
    self.source = source
    self.indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]

  def __getitems__(self, keys: Sequence[int]) -> list[dict[str, Any]]:
    return read_examples(self.source, self.indices[np.asarray(keys, np.int64)])


def read_examples(source: Source, indices: Sequence[int]) -> list[dict[str, Any]]:
  """`[source[i] for i in indices]`, batched through `__getitems__` if present."""
  keys = [int(i) for i in indices]
  if hasattr(source, '__getitems__'):
    return list(source.__getitems__(keys))
  return [source[i] for i in keys]


def subsample(source: Source, max_examples: int | None, seed: int) -> Source:
  """A seeded random subset of at most `max_examples` examples (source order)."""
  if max_examples is None or max_examples >= len(source):
    return source
  rng = np.random.default_rng([_SUBSAMPLE_STREAM, seed])
  return Subset(source, np.sort(rng.choice(len(source), max_examples, replace=False)))
