#!/usr/bin/env bash
# make conformance: Autobahn|Testsuite's fuzzingclient against `twistd -n chanserve`
# serving an echo consumer (tests/project/conformance_routing.py).
#   CASES='1.* 2.*'     run only these cases (default: all of them, which takes >20 minutes)
#   EXCLUDE='12.* 13.*' skip these cases (the compression ones are the slow ones)
#   PORT=9001           where chanserve listens
#   REPORTS=DIR         where the reports go (default conformance/reports)
#   WSTEST=PATH         the wstest command (default ../shared/tools/wstest, which sets itself up)
# Reports go to conformance/reports/ (index.html, index.json); a summary is printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
twistd=${TWISTD:-$root/.venv/bin/twistd}
wstest=${WSTEST:-$root/../shared/tools/wstest}
port=${PORT:-9001}
work=$(mktemp -d)
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

# The spec in the repository, with the port, cases and report folder of this run.
"$python" - "$here/fuzzingclient.json" "$work/spec.json" "$port" "${REPORTS:-$here/reports}" "${CASES:-}" "${EXCLUDE:-}" <<'PY'
import json, sys
source, target, port, outdir, cases, exclude = sys.argv[1:]
spec = json.load(open(source))
spec["outdir"] = outdir
spec["servers"][0]["url"] = "ws://127.0.0.1:%s" % port
if cases.split():
    spec["cases"] = cases.split()
if exclude.split():
    spec["exclude-cases"] = exclude.split()
json.dump(spec, open(target, "w"), indent=2)
PY

cd "$root"
CHANSERVE_TEST_DB="$work/db.sqlite3" PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
  "$twistd" --pidfile= -n --logfile="$work/twistd.log" chanserve \
    --settings tests.project.settings_conformance \
    --endpoint "tcp:$port:interface=127.0.0.1" \
    --websocket-max-message 67108864 --ping-interval 0 &
server=$!

# Wait (bounded) until chanserve accepts connections.
for _ in $(seq 1 100); do
  if "$python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "chanserve did not start:" >&2; cat "$work/twistd.log" >&2; exit 1
  fi
  sleep 0.1
done

reports=${REPORTS:-$here/reports}
rm -rf "$reports"
"$wstest" -m fuzzingclient -s "$work/spec.json"

"$python" - "$reports/index.json" <<'PY'
import collections, json, sys
results = json.load(open(sys.argv[1]))
for agent, cases in sorted(results.items()):
    behavior = collections.Counter(c["behavior"] for c in cases.values())
    close = collections.Counter(c["behaviorClose"] for c in cases.values())
    print("%s: %d cases" % (agent, len(cases)))
    print("  behavior:      " + ", ".join("%s %d" % kv for kv in sorted(behavior.items())))
    print("  behaviorClose: " + ", ".join("%s %d" % kv for kv in sorted(close.items())))
    bad = sorted((k for k, c in cases.items() if c["behavior"] in ("FAILED", "UNIMPLEMENTED")
                  or c["behaviorClose"] == "FAILED"),
                 key=lambda k: [int(p) for p in k.split(".")])
    if bad:
        print("  failed: " + " ".join(bad))
        sys.exit(1)
PY
