#!/usr/bin/env bash
# README's first command: install what is missing, then run the whole product locally.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m devstack up "$@"
