#!/usr/bin/env bash
# Installs what the product and its tests need on a fresh machine: Debian packages
# (chromium for the Playwright runner; with --dev also redis-server for the Upstash protocol
# tests and wrk for bench.host_http), a virtual env in .venv and the Python dependencies.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ "${1:-}" = "--dev" ]; then
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
  command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)  # bench.host_http's closed loop
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi

extras="[engine]"  # mypyc, so the local stack runs the compiled engine
[ "${1:-}" = "--dev" ] && extras="[dev]"  # dev includes mypy too
stamp=".venv/.installed$extras"
hash=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  echo "bootstrap: installing Python dependencies$extras"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1
  .venv/bin/python -m pip install -q -e ".$extras" 2> >(grep -v "is ignored" >&2)
  echo "$hash" > "$stamp"
fi
