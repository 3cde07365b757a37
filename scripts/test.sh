#!/usr/bin/env bash
# Set everything up and run the whole test suite (what CI runs), inside the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091 # written by setup.sh
source .venv/bin/activate
python -m ruff check oscar_jupyter tests bench
python -m ruff format --check oscar_jupyter tests bench
(cd labextension && jlpm install --immutable >/dev/null && jlpm lint:check)
python -m pytest -q "$@"
