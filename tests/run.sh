#!/usr/bin/env bash
# Sets up ./.venv with the test extras and runs the whole test suite (20-35 minutes on 2 CPU
# cores). Extra arguments go to pytest, e.g. tests/run.sh -m "not slow" -k parity
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup_venv.sh test,hf
exec .venv/bin/python -m pytest tests "$@"
