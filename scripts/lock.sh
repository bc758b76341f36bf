#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml's ranges (newest versions allowed), with hashes:
#   requirements/test.lock   runtime + test + build backend  (scripts/test.sh, .ci/run)
#   requirements/serve.lock  runtime + build backend          (scripts/serve.sh), same versions as test.lock
# Needs uv (pip install uv). Upgrade one package only: bash scripts/lock.sh --upgrade-package httpx
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
common=(--generate-hashes --universal --python-version 3.11 --no-header --quiet)
"$UV" pip compile pyproject.toml requirements/build.in --extra test "${common[@]}" "$@" -o requirements/test.lock
"$UV" pip compile pyproject.toml requirements/build.in -c requirements/test.lock "${common[@]}" -o requirements/serve.lock
echo "wrote requirements/test.lock and requirements/serve.lock; run bash scripts/test.sh and commit both"
