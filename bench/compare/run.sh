#!/usr/bin/env bash
# One command for the side-by-side comparison (issue 8):
#   bash bench/compare/run.sh            # full: issue sizes, medians of 3 (about 20-30 min)
#   bash bench/compare/run.sh --quick    # smoke: small n, 1 repeat (a few minutes)
# Other run.py flags pass through (--workloads noop,latency --systems engine,celery ...).
# Needs the project venv (.venv, for the engine and its redis-server); creates the compare venv.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/bench/.venv-compare"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import celery, dramatiq, huey, matplotlib" 2>/dev/null; then
    bash "$HERE/setup.sh"
fi
if [ ! -x "$ROOT/.venv/bin/redis-server" ]; then
    echo "run.sh: $ROOT/.venv/bin/redis-server missing: set up the project venv first" >&2
    exit 1
fi
exec "$VENV/bin/python" "$HERE/run.py" "$@"
