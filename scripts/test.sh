#!/usr/bin/env bash
# Set everything up and run the whole test suite (what CI runs), inside the project's .venv.
#   bash scripts/test.sh            everything: Slurm, the local OSCAR, Chromium (as root)
#   bash scripts/test.sh --quick    the edit-test loop: linters, type checks and the tests that
#                                   need no Slurm, browser or root (jobs run as plain processes)
# Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
if [ "$QUICK" = 1 ]; then bash scripts/setup.sh --python-only; else bash scripts/setup.sh; fi
# shellcheck disable=SC1091 # written by setup.sh
source .venv/bin/activate
python -m ruff check oscar_jupyter tests bench
python -m ruff format --check oscar_jupyter tests bench
python -m mypy
(cd labextension && jlpm install --immutable >/dev/null && jlpm lint:check)
if [ "$QUICK" = 1 ]; then
    OSCAR_JUPYTER_EXECUTOR=process python -m pytest -q -n 3 -m "not slurm and not e2e and not browser" "$@"
else
    python -m pytest -q "$@"
fi
