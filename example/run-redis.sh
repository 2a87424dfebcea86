#!/usr/bin/env bash
# Run the example chat as separate processes over Redis (called by `make run-redis`):
#   - a redis-server on 127.0.0.1:${REDIS_PORT:-6379}, started here unless one answers,
#   - one interface server (twistd chanserve --noworker) on http://127.0.0.1:${PORT:-8000},
#   - ${WORKERS:-2} worker processes (twistd chanserve --worker-only).
# Ctrl-C stops them all (and the redis-server, if this script started it).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/../.venv/bin"
port="${PORT:-8000}"
redis_port="${REDIS_PORT:-6379}"
workers="${WORKERS:-2}"

export CHANSERVE_LAYER=redis
export CHANSERVE_REDIS_URL="${CHANSERVE_REDIS_URL:-redis://127.0.0.1:$redis_port/0}"
export DJANGO_SETTINGS_MODULE=example.settings

pids=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait || true
}
trap cleanup EXIT INT TERM

cd "$here"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then
    echo "starting redis-server on 127.0.0.1:$redis_port"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no &
    pids+=($!)
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
        sleep 0.1
    done
fi

"$bin/python" manage.py migrate --noinput -v 0

"$bin/twistd" -n --pidfile= chanserve --settings example.settings --noworker \
    --endpoint "tcp:$port:interface=127.0.0.1" &
pids+=($!)
for i in $(seq "$workers"); do
    "$bin/twistd" -n --pidfile= chanserve --settings example.settings --worker-only &
    pids+=($!)
done
echo "chat on http://127.0.0.1:$port/ (user demo, password demo); Ctrl-C stops everything"
wait -n
