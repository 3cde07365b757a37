#!/usr/bin/env bash
# Set everything up, start the local OSCAR and run the quickstart notebook, streaming its cells'
# output here while they run. The executed notebook is saved to test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091 # written by setup.sh
source .venv/bin/activate
oscar-jupyter local start
python -m oscar_jupyter.demo notebooks/01-quickstart.ipynb
