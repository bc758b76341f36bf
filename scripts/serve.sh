#!/usr/bin/env bash
# Start the server on the embedded default (a SQLite file in ./.b24robots, no other server).
# Creates the project virtualenv .venv (PYTHON=... picks the interpreter) and installs requirements/serve.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh requirements/serve.lock
exec "$VENV_PY" -m b24robots serve "$@"
