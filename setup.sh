#!/usr/bin/env bash
# Sets storygraph up for development in a virtual environment, ./.venv: made here with python3 -m venv, unless this
# shell already runs inside one (a venv or a conda env), which ./.venv then points at. An externally managed Python
# (Debian's and Ubuntu's own python3) refuses pip installs outside a virtual environment, so nothing is installed
# into the system Python. Inside ./.venv: torch (a CPU build, unless a torch is already there — a CUDA build you
# installed is kept), storygraph with its test tools, Neo4j's Cypher front end (for the dialect check) and, from
# Debian's packages, Chromium and ffmpeg (for the viewer's browser tests).
set -euo pipefail
cd "$(dirname "$0")"
BASE=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@"
}

inside_env=$("$BASE" -c 'import os, sys; print(sys.prefix if sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") == sys.prefix else "")')
if [ -e .venv ] || [ -L .venv ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "setup.sh: ./.venv exists but has no bin/python; remove it and run setup.sh again" >&2
    exit 1
  fi
elif [ -n "$inside_env" ]; then
  ln -s "$inside_env" .venv
  echo "setup.sh: installing into the active environment $inside_env (./.venv points at it)"
else
  if ! "$BASE" -m venv .venv >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv (ensurepip) apart from python3
    rm -rf .venv
    version=$("$BASE" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install "python${version}-venv" || apt_install python3-venv
    "$BASE" -m venv .venv
  fi
  echo "setup.sh: made the virtual environment ./.venv"
fi
PY=.venv/bin/python

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install "torch==2.13.0"
fi
"$PY" -m pip install -e ".[dev]"
npm ci --prefix tools/cypher-lint --no-audit --no-fund

if ! command -v chromium >/dev/null 2>&1 || ! command -v ffmpeg >/dev/null 2>&1; then
  apt_install chromium ffmpeg
fi
echo "storygraph is set up in ./.venv: try '.venv/bin/storygraph demo', then '.venv/bin/python -m pytest'"
