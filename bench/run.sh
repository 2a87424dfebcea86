#!/usr/bin/env bash
# Run chanserve's benchmarks side by side with the peers (`make bench`).
#
#   bash bench/run.sh                 every workload
#   bash bench/run.sh layer ws http   only these (layer, ws, http, redis)
#   bash bench/run.sh --setup         only create the peers' venv
#
# The peers (Daphne 4, Channels 4, channels_redis 4, uvicorn, gunicorn,
# websockets, Django 5.2) live in bench/.venv-peers, created here when
# missing (git-ignored). chanserve runs from this checkout with the
# project's venv (.venv, or $CHANSERVE_BENCH_PYTHON). Everything talks to
# 127.0.0.1 only; every workload is bounded in count and time and kills
# the servers it started.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${CHANSERVE_BENCH_PYTHON:-$ROOT/.venv/bin/python}"
PEERS="${CHANSERVE_BENCH_PEER_VENV:-$HERE/.venv-peers}"
BASE_PY="${PYTHON:-python3}"

setup_peers() {
    if [ ! -x "$PEERS/bin/python" ] || [ ! -f "$PEERS/.installed" ]; then
        echo "== creating the peers' venv in $PEERS"
        "$BASE_PY" -m venv "$PEERS"
        "$PEERS/bin/pip" install -q --upgrade pip
        "$PEERS/bin/pip" install -q -r "$HERE/peers/requirements.txt"
        touch "$PEERS/.installed"
    fi
    "$PEERS/bin/python" -m pip list 2>/dev/null \
        | grep -iE '^(daphne|channels|channels.redis|uvicorn|gunicorn|websockets|django|twisted) ' \
        | tr -s ' ' | paste -sd ',' | sed 's/^/   peers: /'
}

need_wrk() {
    if ! command -v wrk >/dev/null 2>&1; then
        echo "== installing wrk with apt-get (HTTP load generator)"
        if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq && $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
            || echo "   (wrk unavailable: the http workloads fall back to the Python client)"
    fi
}

if [ "${1:-}" = "--setup" ]; then setup_peers; exit 0; fi
if [ ! -x "$PY" ]; then
    echo "chanserve's venv not found at $PY (run 'make install' or set CHANSERVE_BENCH_PYTHON)" >&2
    exit 1
fi

setup_peers
workloads=("$@")
[ ${#workloads[@]} -eq 0 ] && workloads=(layer ws http redis)
echo "== $(date -u +%FT%TZ) $(nproc) cpus, load: $(cut -d' ' -f1-3 /proc/loadavg)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# BENCH_ROUNDS=N overrides each workload's number of rounds (1 for a smoke run).
extra=()
[ -n "${BENCH_ROUNDS:-}" ] && extra=(--rounds "$BENCH_ROUNDS")
status=0
for w in "${workloads[@]}"; do
    case "$w" in
        layer) "$PY" "$HERE/layer.py" "${extra[@]}" || status=1 ;;
        ws)    "$PY" "$HERE/ws.py" "${extra[@]}" || status=1 ;;
        http)  need_wrk; "$PY" "$HERE/http_bench.py" "${extra[@]}" || status=1 ;;
        redis) "$PY" "$HERE/redis_bench.py" "${extra[@]}" || status=1 ;;
        *) echo "unknown workload $w (layer, ws, http, redis)" >&2; status=2 ;;
    esac
done
exit $status
