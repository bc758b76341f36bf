# Sourced by serve.sh and test.sh: make the project virtualenv (.venv) and install the locked dependencies.
#   usage: . scripts/_venv.sh <lock file>      sets VENV_PY to the virtualenv's python
# PYTHON picks the interpreter the virtualenv is made from (default python3); B24R_VENV moves the virtualenv.
# Installs come only from the lock file (exact versions, --require-hashes), then the project itself
# (editable, no dependencies, no build isolation, so nothing unpinned is fetched).

_lock=$1
_py=${PYTHON:-python3}
_venv=${B24R_VENV:-.venv}

_as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x "$_venv/bin/python" ]; then
  echo "creating the project virtualenv $_venv with $_py"
  if ! "$_py" -m venv "$_venv" 2>/dev/null; then
    # Debian's own python3 ships venv/ensurepip separately (python3-venv); install it and try again.
    rm -rf "$_venv"
    if command -v apt-get >/dev/null 2>&1; then
      _ver=$("$_py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      echo "installing python${_ver}-venv (the venv module is missing)"
      _as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq --no-install-recommends "python${_ver}-venv" >/dev/null
      "$_py" -m venv "$_venv"
    else
      echo "error: $_py cannot create a virtualenv; install its venv module or set PYTHON=/path/to/python3.11+" >&2
      exit 1
    fi
  fi
fi

VENV_PY="$_venv/bin/python"
_stamp="$_venv/.b24robots-lock"
_want="$(sha256sum "$_lock" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  echo "installing locked dependencies from $_lock into $_venv"
  "$VENV_PY" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$_lock"
  "$VENV_PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$_want" > "$_stamp"
fi
export PATH="$PWD/$_venv/bin:$PATH"
