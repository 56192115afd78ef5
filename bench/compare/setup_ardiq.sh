#!/usr/bin/env bash
# Creates bench/.venv-ardiq (gitignored) with ArdiQ (requirements-ardiq.txt). ArdiQ needs
# Python >= 3.12: ARDIQ_PYTHON if set, else the first 3.12 found (python3.12 on PATH, then
# pyenv's), else a 3.13+ (the README's ArdiQ figures ran on 3.12). run.sh calls this when
# the venv is missing; without such a Python it fails and run.py skips the ArdiQ rows.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/../.venv-ardiq"
ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }
PY="${ARDIQ_PYTHON:-}"
if [ -z "$PY" ]; then
    PYENV_VERSIONS="${PYENV_ROOT:-$HOME/.pyenv}/versions"
    for cand in python3.12 $(ls -d "$PYENV_VERSIONS"/3.12*/bin/python 2>/dev/null | sort -rV) \
            python3.13 $(ls -d "$PYENV_VERSIONS"/3.1[3-9]*/bin/python 2>/dev/null | sort -rV); do
        if command -v "$cand" >/dev/null 2>&1 && ok "$cand"; then PY="$cand"; break; fi
    done
fi
if [ -z "$PY" ] || ! ok "$PY"; then
    echo "setup_ardiq.sh: no Python >= 3.12 found (set ARDIQ_PYTHON); ArdiQ needs one" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$HERE/requirements-ardiq.txt"
"$VENV/bin/python" - <<'PY'
import sys
from importlib.metadata import version
import ardiq, redis, psutil  # noqa: F401
print("ardiq venv ready: ardiq", version("ardiq"), "python", sys.version.split()[0],
      "redis-py", redis.__version__)
PY
