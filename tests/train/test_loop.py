"""The training loop: batches per member, chunks of steps, progress logging."""
import json
import time
import types

import numpy as np

from sve_jax.train import loop
from sve_jax.data import pipeline


def test_per_member_batches_differ_and_resume_from_one_state():
  source = [{'x': np.float32(i), 'label': np.int32(i % 3)} for i in range(20)]
  config = types.SimpleNamespace(seed=5, batch_size=4, num_epochs=2)
  batches = pipeline.iterate(loop.train_batches(config, source, None, 3))
  stream = [next(batches) for _ in range(7)]
  state = json.loads(json.dumps(batches.get_state()))  # as a checkpoint's meta holds it
  stream += list(batches)
  assert len(stream) == 10  # 5 steps per epoch, 2 epochs
  for batch in stream:
    assert batch['x'].shape == (3, 4) and batch['label'].shape == (3, 4)
    np.testing.assert_array_equal(batch['x'], batch['index'])  # each member's own examples
    assert len({tuple(row) for row in batch['index']}) == 3  # every member its own examples
  # Member m's stream is exactly the single stream seeded config.seed + m.
  for m in range(3):
    single = pipeline.iterate(pipeline.train_dataset(source, global_batch_size=4, seed=5 + m,
                                                     num_epochs=2))
    alone = [batch['index'] for batch in single]
    np.testing.assert_array_equal([batch['index'][m] for batch in stream], alone)
  # One saved state resumes all member streams exactly, in a rebuilt pipeline.
  resumed = list(pipeline.iterate(loop.train_batches(config, source, None, 3), state=state))
  assert len(resumed) == 3
  for a, b in zip(resumed, stream[7:]):
    np.testing.assert_array_equal(a['index'], b['index'])
    np.testing.assert_array_equal(a['example_seed'], b['example_seed'])


def test_chunks_end_at_every_multiple_and_every_counted_event():
  from sve_jax.train import loop
  from configs import default
  config = default.get_config()
  config.steps_per_execution, config.eval_every_steps, config.checkpoint.every_steps = 4, 7, 9
  total, per_epoch = 30, 11
  ends, step = [], 0
  while step < total:
    step = loop.chunk_end(step, config, total, per_epoch)
    ends.append(step)
  # Independent value: the sorted union of each interval's multiples up to the last step.
  expected = sorted({s for n in (4, 7, 9, 11) for s in range(n, total + 1, n)} | {total})
  assert ends == expected


def test_logged_throughput_of_a_multi_step_call_is_its_examples_over_its_time(
    tmp_path, monkeypatch):
  from sve_jax.train import loop
  from configs import default
  config = default.get_config()
  config.batch_size, config.log_every_steps = 8, 2
  clock = iter([100., 100., 104.])  # progress start, call start, call end: 4 steps in 4 s
  # The loop's own clock only (the TensorBoard writer keeps the real one).
  monkeypatch.setattr(loop, 'time', types.SimpleNamespace(time=lambda: next(clock),
                                                          monotonic=time.monotonic))
  progress = loop.Progress(config, str(tmp_path), step=0, total_steps=4)
  progress.start_call()
  metrics = {'loss': np.ones(4), 'grad_norm': np.ones(4)}
  assert loop.log_steps(metrics, 0, progress, steps_per_epoch=4, workdir=str(tmp_path)) == 4
  progress.close()
  logged = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  # Steps 2 and 4 reach the host together; each log covers 2 steps × 8 examples in 2 s.
  assert [(r['step'], r['examples_per_sec']) for r in logged] == [(2, 8.), (4, 8.)]
