#!/usr/bin/env bash
# Install b24robots and start the server on the embedded default (a SQLite file in ./.b24robots).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -e .
exec b24robots serve "$@"
