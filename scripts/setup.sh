#!/usr/bin/env bash
# Set up a fresh machine (Debian 12, root) for the demo and the tests: system packages from apt,
# the project and its test extras in the project's own virtualenv (.venv in the checkout; the
# system interpreter is never pip-installed into), Chromium for the browser tests, and a running
# single-node Slurm.
#
# Re-running is fast: the venv is reused while pyproject.toml is unchanged (a changed one rebuilds
# it from scratch), and the package is reinstalled only when the sidebar's sources changed.
#
# --python-only: only the venv (no apt, no Slurm, no root): what the quick test tier needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_ONLY=0
if [ "${1:-}" = "--python-only" ]; then PYTHON_ONLY=1; fi

VENV=.venv
PYTHON=${OSCAR_JUPYTER_PYTHON:-python3}

say() { printf 'setup: %s\n' "$*"; }

interpreter_has_venv() { "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; }

need_apt=()
if [ "$PYTHON_ONLY" = 1 ]; then
    interpreter_has_venv || { say "error: $PYTHON has no venv module: install python3-venv"; exit 1; }
    command -v node >/dev/null || { say "error: no Node.js (the sidebar is built with it): install nodejs"; exit 1; }
fi
[ "$PYTHON_ONLY" = 1 ] || command -v sbatch >/dev/null || need_apt+=(slurm-wlm munge)
[ "$PYTHON_ONLY" = 1 ] || command -v bwrap >/dev/null || need_apt+=(bubblewrap)
[ "$PYTHON_ONLY" = 1 ] || command -v chromium >/dev/null || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v "$PYTHON" >/dev/null || need_apt+=(python3)
interpreter_has_venv || need_apt+=(python3-venv)
# The local cluster's jobs run in the host's /usr (see oscar_jupyter/local/singularity.py): its
# Python gets numpy and matplotlib, as a scientific image would have, for the figures tutorial.
[ "$PYTHON_ONLY" = 1 ] || /usr/bin/python3 -c 'import numpy, matplotlib' >/dev/null 2>&1 ||
    need_apt+=(python3-numpy python3-matplotlib)
# Open MPI and mpi4py for that Python: a cell run as ranks (--ntasks T --mpi) starts them through
# the image's mpiexec, so mpi4py's COMM_WORLD holds every rank (the ranks tutorial, tests/mpi).
[ "$PYTHON_ONLY" = 1 ] || { command -v mpiexec >/dev/null && /usr/bin/python3 -c 'import mpi4py' >/dev/null 2>&1; } ||
    need_apt+=(openmpi-bin python3-mpi4py)
if [ ${#need_apt[@]} -gt 0 ]; then
    say "apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
interpreter_has_venv || { say "error: $PYTHON has no venv module even after apt-get install python3-venv"; exit 1; }

# What the venv was built from: the dependencies (pyproject.toml) and the interpreter. What the
# installed package was built from: also the sidebar's sources, which the wheel build compiles.
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
venv_key="$(fingerprint pyproject.toml) $("$PYTHON" -c 'import sys; print(sys.version)' | head -1)"
sidebar_key=$(fingerprint labextension/package.json labextension/yarn.lock labextension/tsconfig.json \
    $(find labextension/src labextension/style labextension/schema -type f | sort))

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.venv-key" 2>/dev/null)" = "$venv_key" ]; then
    if [ "$(cat "$VENV/.sidebar-key" 2>/dev/null)" = "$sidebar_key" ]; then
        say "$VENV is up to date"
    else
        say "the sidebar's sources changed: reinstalling the package into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
        echo "$sidebar_key" >"$VENV/.sidebar-key"
    fi
else
    [ -d "$VENV" ] && say "pyproject.toml or the interpreter changed: rebuilding $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    say "pip install -e .[test] into $VENV (builds the JupyterLab sidebar with Node and jlpm)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
    echo "$venv_key" >"$VENV/.venv-key"
    echo "$sidebar_key" >"$VENV/.sidebar-key"
fi

[ "$PYTHON_ONLY" = 1 ] || bash scripts/slurm-cluster.sh start
