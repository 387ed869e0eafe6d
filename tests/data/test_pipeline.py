"""The grain pipeline (`sve_jax.data.pipeline`): epochs fixed by seed and epoch, each process's
slice of every global batch, evaluation in order, and a stream that resumes exactly."""
import json

import numpy as np
import pytest

from sve_jax import data
from sve_jax.data import transforms

from conftest import all_examples


def toy_source(n):
  return [{'x': np.float32(i), 'text': f't{i}'.encode()} for i in range(n)]


def train_stream(source, *, state=None, num_workers=0, **kwargs):
  """The whole training stream of `data.train_dataset(source, **kwargs)`, as a list."""
  return list(data.iterate(data.train_dataset(source, **kwargs), state=state,
                           num_workers=num_workers))


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
  source = toy_source(50)
  run = train_stream(source, global_batch_size=8, seed=0, num_epochs=3)
  assert len(run) == 3 * (50 // 8)
  again = train_stream(source, global_batch_size=8, seed=0, num_epochs=3)
  other = train_stream(source, global_batch_size=8, seed=1, num_epochs=3)
  order = [b['index'] for b in run]
  np.testing.assert_array_equal(order, [b['index'] for b in again])
  assert not np.array_equal(order, [b['index'] for b in other])
  for batch in run:
    np.testing.assert_array_equal(batch['x'], batch['index'])  # Right examples read.
  epochs = [np.concatenate(order[6 * e:6 * e + 6]) for e in range(3)]
  for epoch in epochs:  # 48 distinct examples; the 2 left over are dropped, not carried over.
    assert len(set(epoch)) == 48 and set(epoch) <= set(range(50))
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
  # Seeds s and s + 1 (ensemble members) do not share an epoch's order one epoch apart.
  other_epoch0 = np.concatenate([b['index'] for b in other[:6]])
  assert not np.array_equal(epochs[1], other_epoch0)


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_slices_partition_each_global_batch(process_count):
  source = toy_source(70)
  single = train_stream(source, global_batch_size=16, seed=3, num_epochs=2)
  per_process = [train_stream(source, global_batch_size=16, seed=3, num_epochs=2,
                              process_index=p, process_count=process_count)
                 for p in range(process_count)]
  assert {len(run) for run in per_process} == {len(single)} == {8}
  for step, batch in enumerate(single):
    parts = [run[step]['index'] for run in per_process]
    assert all(len(part) == 16 // process_count for part in parts)
    np.testing.assert_array_equal(np.concatenate(parts), batch['index'])
    np.testing.assert_array_equal(
        np.concatenate([run[step]['example_seed'] for run in per_process]),
        batch['example_seed'])
  with pytest.raises(ValueError, match='divisible by the process count 3'):
    train_stream(source, global_batch_size=16, seed=3, process_count=3, num_epochs=1)


def test_eval_batches_cover_each_example_once_in_order():
  source = toy_source(23)
  per_process = [list(data.eval_batches(source, global_batch_size=8, process_index=p,
                                        process_count=2)) for p in range(2)]
  assert [len(batches) for batches in per_process] == [3, 3] == [data.num_eval_batches(23, 8)] * 2
  positions = []
  for step in range(3):
    for batches in per_process:
      batch = batches[step]
      assert batch['x'].shape == (4,) and batch['mask'].dtype == bool
      np.testing.assert_array_equal(batch['mask'], batch['index'] >= 0)
      np.testing.assert_array_equal(batch['x'][batch['mask']], batch['index'][batch['mask']])
      positions.extend(batch['index'])
  # Global batches in source order, padded at the end only.
  np.testing.assert_array_equal(positions, list(range(23)) + [-1])
  with pytest.raises(ValueError, match='empty'):
    data.eval_dataset([], global_batch_size=8)


def test_resume_from_a_saved_state_continues_the_same_stream():
  rng = np.random.default_rng(0)
  source = [{'image': rng.integers(0, 256, (9, 7, 3), dtype=np.uint8), 'label': i % 5}
            for i in range(30)]
  transform = transforms.image_transform(size=(5, 5), augment=True)
  kwargs = dict(global_batch_size=4, seed=11, num_epochs=3, transform=transform)
  full = train_stream(source, **kwargs)
  assert len(full) == 3 * 7
  for done in (3, 10):  # mid-epoch, and across an epoch boundary (7 steps an epoch)
    batches = data.iterate(data.train_dataset(source, **kwargs))
    for _ in range(done):
      next(batches)
    state = json.loads(json.dumps(batches.get_state()))  # as a checkpoint's meta holds it
    resumed = train_stream(source, state=state, **kwargs)  # a rebuilt pipeline
    assert len(resumed) == len(full) - done
    for expected, got in zip(full[done:], resumed):
      np.testing.assert_array_equal(got['image'], expected['image'])  # same crops and flips
      np.testing.assert_array_equal(got['label'], expected['label'])


@pytest.mark.slow  # starts grain worker processes
def test_worker_processes_give_the_same_batches_and_resume_exactly():
  from absl import flags  # grain's workers read absl flags, parsed under train.py's app.run
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  source = toy_source(20)
  kwargs = dict(global_batch_size=4, seed=2, num_epochs=2)
  in_process = [b['index'] for b in train_stream(source, **kwargs)]
  batches = data.iterate(data.train_dataset(source, **kwargs), num_workers=2)
  try:
    head = [next(batches)['index'] for _ in range(3)]
    state = json.loads(json.dumps(batches.get_state()))  # as a checkpoint's meta holds it
    tail = [b['index'] for b in batches]
  finally:
    batches.close()
  np.testing.assert_array_equal(head + tail, in_process)
  assert len(in_process) == 10
  resumed = data.iterate(data.train_dataset(source, **kwargs), num_workers=2, state=state)
  try:
    np.testing.assert_array_equal([b['index'] for b in resumed], in_process[3:])
  finally:
    resumed.close()


def test_subsample_is_seeded_and_distinct():
  source = toy_source(100)
  subset = data.subsample(source, 10, seed=0)
  xs = [ex['x'] for ex in all_examples(subset)]
  assert len(subset) == 10 and len(set(xs)) == 10
  assert xs == [ex['x'] for ex in all_examples(data.subsample(source, 10, seed=0))]
  assert xs != [ex['x'] for ex in all_examples(data.subsample(source, 10, seed=1))]
  assert data.subsample(source, 1000, seed=0) is source


def test_member_streams_follow_their_own_seeds():
  source = toy_source(40)
  members = list(data.iterate(data.member_train_dataset(
      source, seeds=[5, 6], global_batch_size=8, num_epochs=1)))
  for seed, m in ((5, 0), (6, 1)):
    alone = train_stream(source, global_batch_size=8, seed=seed, num_epochs=1)
    assert len(alone) == len(members)
    for stacked, batch in zip(members, alone):
      np.testing.assert_array_equal(stacked['index'][m], batch['index'])
