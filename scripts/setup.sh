#!/usr/bin/env bash
# Set up a fresh machine (Debian 12, root) for the demo and the tests: system packages, the Python
# package with its test extras, Chromium for the browser tests, and a running single-node Slurm.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sbatch >/dev/null || need_apt+=(slurm-wlm munge)
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "setup: pip install -e .[test]"
python3 -m pip install -q --disable-pip-version-check -e ".[test]"

bash scripts/slurm-cluster.sh start
