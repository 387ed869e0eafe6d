#!/usr/bin/env bash
# The test command. With no flag (what CI runs): set up (with the reference packages) and run
# the whole suite. Extra arguments go to pytest.
#   bash scripts/test.sh            everything: unit, slow, end-to-end
#   bash scripts/test.sh --fast     the developer's lane: no `slow`, no `e2e` (set up once first)
# Both run on two pytest-xdist workers (the CI machine's 2 cores), a test file per worker, so
# a file's module fixtures (a trained run) are built once. pytest exits 5 when no test ran:
# that fails too.
set -euo pipefail
cd "$(dirname "$0")/.."
# The two workers share the two cores: OpenBLAS threads of one would spin-wait on the other's.
export OPENBLAS_NUM_THREADS=1
# Most of the suite's time is XLA compiling small programs that then run a step or two; LLVM's
# optimisation passes are most of that compile (Lite0's training step, beside a busy core:
# 54 s to compile with them, 31 s without) and buy little at these sizes. The HLO, i.e. what
# each program computes, is unchanged; only its machine code is less tuned. Tests that start
# train.py on simulated devices set their own XLA_FLAGS and run at the default level.
export XLA_FLAGS="--xla_backend_optimization_level=0${XLA_FLAGS:+ $XLA_FLAGS}"
if [ "${1:-}" = "--fast" ]; then
  shift
  [ -x .venv/bin/python ] || bash scripts/setup.sh --test
  exec .venv/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow and not e2e" "$@"
fi
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=30 "$@"
