#!/usr/bin/env bash
# Creates .venv and installs everything sve_jax needs. Idempotent.
#   bash scripts/setup.sh          runtime + offline assets (+ Fashion-MNIST via apt if root)
#   bash scripts/setup.sh --test   also the reference implementations the tests compare against,
#                                  and tunix (sve_jax.tunix and its tests)
# The project itself is installed editable (pyproject.toml; its dependencies are
# requirements.txt, requirements-test.txt as the `test` extra and requirements-tunix.txt as
# the `tunix` extra), so `import sve_jax` works from any directory in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
EXTRAS=""
[ "${1:-}" = "--test" ] && EXTRAS="[test,tunix]"
$PIP install -e ".$EXTRAS"
$PIP install --no-deps -r requirements-assets.txt
# efficientnet-lite-pytorch only declares torch; install without deps so the test torch pin rules.
if [ "${1:-}" = "--test" ]; then
  $PIP install --no-deps efficientnet-lite-pytorch==0.1.0
fi
# Headless Chromium renders report.html in its browser test (tests/eval/test_html_report.py).
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)) \
    >/dev/null 2>&1 || echo "setup: could not install chromium (only the report's browser test needs it)"
fi
# Fashion-MNIST for configs/fmnist_efficientnet_lite0.py comes from Debian's package.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "setup: could not install dataset-fashion-mnist (only the Fashion-MNIST config needs it)"
fi
# Fortune cookies (near-OOD text, the `fortunes_text` builder) come from Debian's package.
if [ ! -f /usr/share/games/fortunes/fortunes ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq fortunes-min || (apt-get update -qq && apt-get install -y -qq fortunes-min)) \
    >/dev/null 2>&1 || echo "setup: could not install fortunes-min (only the fortunes_text OOD set needs it)"
fi
echo "setup: ok ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
