#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine with Python >= 3.11, then run it:
# lint (ruff check + ruff format --check), types (mypy --strict on src/), and the whole pytest suite
# (SQLite and a real PostgreSQL started by the suite, Debian chromium for the browser tests).
# System packages come from apt; Python packages only from requirements/test.lock into the project
# virtualenv .venv (PYTHON=... picks the interpreter it is made from).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

. scripts/_venv.sh requirements/test.lock

echo "== ruff"; "$VENV_PY" -m ruff check src tests bench examples scripts; "$VENV_PY" -m ruff format --check src tests bench examples scripts
echo "== mypy"; "$VENV_PY" -m mypy
echo "== pytest"; "$VENV_PY" -m pytest "$@"
