"""Deterministic, resumable, multi-host batching over random-access sources.

A *source* is anything with `__len__` and `__getitem__(int) -> dict` (a tfds
`data_source` split, a `Subset`, a list of dicts); `__getitems__(list[int])` is
used when present, as tfds data sources read a batch of records faster that way.

Everything is a function of `(seed, epoch, step, process_index)`, so:

* every process computes the same global permutation per epoch and reads its
  own contiguous block of each global batch (`process_slice`);
* a checkpoint that stores the `Position` reached resumes the exact batch
  stream (`train_batches(..., start=position)`), without reading skipped data;
* augmentation draws from per-example seeds of `(seed, epoch, index)`
  (`example_seeds`), so it too is reproduced after a restart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

Batch = dict[str, Any]
Source = Sequence[dict[str, Any]]
Transform = Callable[[Batch], Batch]

# Independent random streams derived from one user seed.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1
_SUBSAMPLE_STREAM = 2


@dataclasses.dataclass(frozen=True)
class Position:
  """Where a training pass stands: `step` batches of `epoch` are done."""
  epoch: int = 0
  step: int = 0

  def as_dict(self) -> dict[str, int]:
    """Plain ints, for a JSON / orbax checkpoint."""
    return {'epoch': self.epoch, 'step': self.step}

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> Position:
    return cls(epoch=int(values['epoch']), step=int(values['step']))


# ---------------------------------------------------------------- indices


def local_batch_size(global_batch_size: int, process_count: int) -> int:
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


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The order in which epoch `epoch` visits the examples; fixed by `seed`."""
  rng = np.random.default_rng([_SHUFFLE_STREAM, seed, epoch])
  return rng.permutation(num_examples)


def process_slice(global_batch: np.ndarray, process_index: int,
                  process_count: int) -> np.ndarray:
  """The contiguous block of a global batch that `process_index` reads.

  Blocks are in process order, matching a batch sharded along its leading
  axis over processes.
  """
  size = local_batch_size(len(global_batch), process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count}).')
  return global_batch[process_index * size:(process_index + 1) * size]


def train_indices(num_examples: int, global_batch_size: int, *, seed: int,
                  position: Position, process_index: int = 0,
                  process_count: int = 1) -> np.ndarray:
  """Source indices of this process's part of the training batch at `position`."""
  if not 0 <= position.step < steps_per_epoch(num_examples, global_batch_size):
    raise ValueError(f'{position} is outside an epoch of '
                     f'{steps_per_epoch(num_examples, global_batch_size)} steps.')
  start = position.step * global_batch_size
  global_batch = epoch_permutation(num_examples, seed, position.epoch)[
      start:start + global_batch_size]
  return process_slice(global_batch, process_index, process_count)


def example_seeds(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
  """Per-example augmentation seeds, `(len(indices), 2)` uint32.

  Row i depends only on `(seed, epoch, indices[i])`: an example is augmented
  the same way whatever batch, process or restart it is read in.
  """
  return np.stack([
      np.random.SeedSequence([_AUGMENT_STREAM, seed, epoch, int(i)]).generate_state(2)
      for i in indices]).astype(np.uint32).reshape(len(indices), 2)


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  """Global evaluation batches needed to cover every example once."""
  return -(-num_examples // global_batch_size)


def eval_indices(num_examples: int, global_batch_size: int, step: int, *,
                 process_index: int = 0,
                 process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Source indices and validity mask of this process's part of eval batch `step`.

  Global batch `step` holds examples `step * B ... step * B + B - 1` in source
  order; positions past the end are padding (index -1, mask False).
  """
  positions = step * global_batch_size + np.arange(global_batch_size)
  positions = process_slice(positions, process_index, process_count)
  mask = positions < num_examples
  return np.where(mask, positions, -1), mask


# ---------------------------------------------------------------- reading


def collate(examples: Sequence[dict[str, Any]]) -> Batch:
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


def read_batch(source: Source, indices: np.ndarray) -> Batch:
  """Reads `source[i]` for each index and collates them."""
  return collate(read_examples(source, indices))


def train_batches(source: Source, *, global_batch_size: int, seed: int,
                  start: Position = Position(), num_epochs: int | None = None,
                  process_index: int = 0, process_count: int = 1,
                  transform: Transform | None = None) -> Iterator[tuple[Batch, Position]]:
  """Shuffled training batches from `start`, as `(batch, position after it)`.

  Each epoch visits `steps_per_epoch` full global batches in the order of
  `epoch_permutation(seed, epoch)`; the last partial batch is dropped. This
  process receives its `process_slice` of each. Besides the source features a
  batch has `index` (source indices, int64) and `example_seed` (see
  `example_seeds`), then `transform` is applied.

  Save the yielded position with the model; passing it back as `start`
  continues with exactly the batches an uninterrupted run would have produced.

  Args:
    source: the training split.
    global_batch_size: examples per step over all processes.
    seed: shuffling and augmentation seed.
    start: the position to start from.
    num_epochs: stop before epoch `num_epochs`; `None` runs forever.
    process_index: this process (`jax.process_index()`).
    process_count: all processes (`jax.process_count()`).
    transform: `batch -> batch`, e.g. from `preprocess`.

  Yields:
    `(batch, position)`, where `position` is where the next batch starts.
  """
  num_examples = len(source)
  steps = steps_per_epoch(num_examples, global_batch_size)
  position = start
  while num_epochs is None or position.epoch < num_epochs:
    indices = train_indices(num_examples, global_batch_size, seed=seed,
                            position=position, process_index=process_index,
                            process_count=process_count)
    batch = read_batch(source, indices)
    batch['index'] = indices.astype(np.int64)
    batch['example_seed'] = example_seeds(seed, position.epoch, indices)
    step = position.step + 1
    position = Position(position.epoch + 1, 0) if step == steps else Position(position.epoch, step)
    yield (transform(batch) if transform else batch), position


def eval_batches(source: Source, *, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1,
                 transform: Transform | None = None) -> Iterator[Batch]:
  """Every example exactly once, in source order, in fixed-size batches.

  The last global batch is padded (with copies of example 0) to full size;
  `mask` is False on padding and `index` is -1 there. Every process yields
  `num_eval_batches` batches, so collective ops stay in step.
  """
  num_examples = len(source)
  if num_examples == 0:
    raise ValueError('cannot evaluate on an empty source.')
  for step in range(num_eval_batches(num_examples, global_batch_size)):
    indices, mask = eval_indices(num_examples, global_batch_size, step,
                                 process_index=process_index,
                                 process_count=process_count)
    batch = read_batch(source, np.where(mask, indices, 0))
    batch['index'] = indices.astype(np.int64)
    batch['mask'] = mask
    yield transform(batch) if transform else batch


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
