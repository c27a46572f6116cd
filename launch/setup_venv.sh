#!/usr/bin/env bash
# Creates ./.venv (if needed) and installs bert_jax into it with the given extras.
# Usage: launch/setup_venv.sh [EXTRAS]      e.g. launch/setup_venv.sh test,hf
# Re-running is cheap: it skips pip when setup.py, constraints.txt and the extras are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.bert_jax-$(cat setup.py constraints.txt | sha256sum | cut -c1-16)-${extras//,/_}"
if [[ ! -f "$stamp" ]]; then
  spec="."
  [[ -n "$extras" ]] && spec=".[${extras}]"
  echo "Installing bert_jax${extras:+[$extras]} into .venv (first run: a few minutes)..."
  .venv/bin/python -m pip install -q -c constraints.txt -e "$spec"
  touch "$stamp"
fi
