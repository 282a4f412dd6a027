#!/usr/bin/env bash
# Installs storygraph for development: torch (a CPU build unless one is already installed), the package with
# its test tools, Neo4j's Cypher front end (for the dialect check) and Chromium (for the viewer's browser tests).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install "torch==2.13.0"
fi
"$PY" -m pip install -e ".[dev]"
npm ci --prefix tools/cypher-lint --no-audit --no-fund

if ! command -v chromium >/dev/null 2>&1 || ! command -v ffmpeg >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium ffmpeg
fi
echo "storygraph is set up: try 'storygraph demo', then 'python -m pytest'"
