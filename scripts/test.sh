#!/usr/bin/env bash
# README's second command: install what the tests need, then run them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
exec .venv/bin/python -m pytest "$@"
