#!/usr/bin/env bash
# Creates bench/.venv-compare (gitignored) with Celery 5, Dramatiq, Huey, taskiq (+ taskiq-redis),
# SAQ and matplotlib.
# The engine never imports any of these; its driver runs in the project venv.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/../.venv-compare"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$HERE/requirements.txt"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
import celery, dramatiq, huey, redis, matplotlib, taskiq_redis, saq  # noqa: F401
print("compare venv ready: celery", celery.__version__, "dramatiq", dramatiq.__version__,
      "huey", huey.__version__, "taskiq", version("taskiq"), "taskiq-redis",
      version("taskiq-redis"), "saq", version("saq"), "redis-py", redis.__version__,
      "matplotlib", matplotlib.__version__)
PY
