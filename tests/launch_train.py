"""Runs ``train.py`` exactly as ``python train.py FLAGS`` would, with test hooks set by env.

  python tests/launch_train.py train.py FLAGS...

SVE_TEST_WRITES_LOG=<file>: at exit, writes to <file> (JSON) every path this process opened
  for writing with Python's ``open`` (an audit hook sees them).
SVE_TEST_KILL_AFTER_SAVE=<step>: SIGKILL this process as soon as the checkpoint of <step> is
  committed to ``checkpoints/latest`` (a preemption right after a mid-epoch save).
SVE_TEST_KILL_IN_SAVE=<step>: SIGKILL this process while it writes the checkpoint of <step>:
  after its files are written, before orbax's atomic rename commits it.
"""
import atexit
import json
import os
import runpy
import signal
import sys


def _record_writes(log_path: str) -> None:
  written = []

  def hook(event, args):
    if event != 'open' or not isinstance(args[0], str):
      return
    path, mode, flags = args
    if (mode and any(c in mode for c in 'wax+')) or (flags & (os.O_WRONLY | os.O_RDWR)):
      written.append(os.path.abspath(path))

  sys.addaudithook(hook)

  def dump():
    with open(log_path, 'w') as f:
      json.dump(written, f)

  atexit.register(dump)


def _kill_after_save(step: int) -> None:
  from sve_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  save = checkpoint.Checkpointer.save

  def save_then_die(self, state, meta, **kwargs):
    save(self, state, meta, **kwargs)
    if int(state.step) == step:
      self.wait()  # committed, asynchronous or not
      os.kill(os.getpid(), signal.SIGKILL)

  checkpoint.Checkpointer.save = save_then_die


def _kill_in_save(step: int) -> None:
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def die_before_commit(self, *args, **kwargs):
    final = self.get_final()
    if final.name == str(step) and final.parent.name == 'latest':
      os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self, *args, **kwargs)

  atomicity.AtomicRenameTemporaryPath.finalize = die_before_commit


def main() -> None:
  script = os.path.abspath(sys.argv[1])
  sys.path.insert(0, os.path.dirname(script))
  if os.environ.get('SVE_TEST_WRITES_LOG'):
    _record_writes(os.environ['SVE_TEST_WRITES_LOG'])
  if os.environ.get('SVE_TEST_KILL_AFTER_SAVE'):
    _kill_after_save(int(os.environ['SVE_TEST_KILL_AFTER_SAVE']))
  if os.environ.get('SVE_TEST_KILL_IN_SAVE'):
    _kill_in_save(int(os.environ['SVE_TEST_KILL_IN_SAVE']))
  sys.argv = sys.argv[1:]
  runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
  main()
