#!/usr/bin/env bash
# Creates bench/.venv-arq (gitignored) with arq (requirements-arq.txt): arq pins redis < 6,
# which taskiq-redis (redis >= 8, in bench/.venv-compare) cannot share. run.sh calls this
# when the venv is missing; without it run.py skips the arq rows.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/../.venv-arq"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$HERE/requirements-arq.txt"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
import arq, redis, psutil  # noqa: F401
print("arq venv ready: arq", version("arq"), "redis-py", redis.__version__)
PY
