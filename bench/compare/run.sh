#!/usr/bin/env bash
# One command for the side-by-side comparison (issue 8):
#   bash bench/compare/run.sh            # full: issue sizes, medians of 3 (about 20-30 min)
#   bash bench/compare/run.sh --quick    # smoke: small n, 1 repeat (a few minutes)
# Other run.py flags pass through (--workloads noop,latency --systems engine,celery ...).
# Needs the project venv (.venv, for the engine and its redis-server); creates the compare venv
# and the ArdiQ venv (bench/.venv-ardiq, setup_ardiq.sh) and the arq venv (bench/.venv-arq,
# setup_arq.sh).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/bench/.venv-compare"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import celery, dramatiq, huey, taskiq_redis, saq, matplotlib" 2>/dev/null; then
    bash "$HERE/setup.sh"
fi
# ArdiQ (Python >= 3.12) has a venv of its own; made here unless --systems/--configs leave it out
AVENV="$ROOT/bench/.venv-ardiq"
want_ardiq=1
case " $* " in *" --systems"*|*" --configs"*) case "$*" in *ardiq*) ;; *) want_ardiq=0 ;; esac ;; esac
if [ "$want_ardiq" = 1 ] && { [ ! -x "$AVENV/bin/python" ] || ! "$AVENV/bin/python" -c "import ardiq, redis, psutil" 2>/dev/null; }; then
    bash "$HERE/setup_ardiq.sh" || echo "run.sh: no ArdiQ venv (see above): its rows will be skipped" >&2
fi
# arq (it pins redis-py < 6) likewise, bench/.venv-arq
QVENV="$ROOT/bench/.venv-arq"
want_arq=1
case " $* " in *" --systems"*|*" --configs"*) case "$*" in *arq*) ;; *) want_arq=0 ;; esac ;; esac
if [ "$want_arq" = 1 ] && { [ ! -x "$QVENV/bin/python" ] || ! "$QVENV/bin/python" -c "import arq, redis, psutil" 2>/dev/null; }; then
    bash "$HERE/setup_arq.sh" || echo "run.sh: no arq venv (see above): its rows will be skipped" >&2
fi
if [ ! -x "$ROOT/.venv/bin/redis-server" ]; then
    echo "run.sh: $ROOT/.venv/bin/redis-server missing: set up the project venv first" >&2
    exit 1
fi
exec "$VENV/bin/python" "$HERE/run.py" "$@"
