#!/usr/bin/env bash
# sitegate's own CPU work per request, as a count of instructions: the release binary
# runs under valgrind's callgrind, a Python client sends N requests over 4 keep-alive
# connections, and the count over those requests (user space only: the kernel's part
# is not counted) is divided by N. Unlike requests/s on a shared machine this does not
# vary from run to run by more than about 1 %, so it shows what a change to the request
# path costs or saves.
#
#   bash benches/instructions.sh                      # small GET, pass-through route
#   URL=/api/redacted bash benches/instructions.sh    # any route of the load policy
#   POST=1 URL=/models/delay-predictor/2.1.0/predict bash benches/instructions.sh
#                                   # POST load.sh's 2 KB record (with its API key)
#   PROFILE=/tmp/cg.out bash benches/instructions.sh  # keep the profile for callgrind_annotate
#
# Installs valgrind from Debian's packages when it is missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
URL=${URL:-/api/phase9/intelligence}
UP_PORT=${UP_PORT:-18280}
SG_PORT=${SG_PORT:-18282}
SG_ADMIN=${SG_ADMIN:-18283}

source benches/lib.sh
if ! need valgrind; then
    echo "installing valgrind (apt-get)..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
cargo build --release --quiet --bin sitegate --example upstream

start_upstream "$UP_PORT"
write_policy "$SG_PORT" "$SG_ADMIN" "$UP_PORT"
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    target/release/sitegate run --config "$work/sitegate.toml" >"$work/sitegate.log" 2>&1 &
sg_pid=$!
pids+=($sg_pid)
wait_port "$SG_PORT"

body=
if [ -n "${POST:-}" ]; then write_bodies; body=$work/record.json; fi
client() { # requests
    python3 - "$SG_PORT" "$URL" "$1" "$body" "$key" <<'PY'
import http.client, sys
port, url, n, body, key = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
data = open(body, "rb").read() if body else None
headers = {"Content-Type": "application/json", "X-API-Key": key} if data else {}
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
for i in range(n):
    c = conns[i % 4]
    c.request("POST" if data else "GET", url, body=data, headers=headers)
    r = c.getresponse()
    r.read()
    assert r.status == 200, f"{url}: {r.status}"
PY
}
# Warm-up (connections to the upstream opened, caches filled), then count from zero.
client 200
callgrind_control -z "$sg_pid" >/dev/null 2>&1
client "$N"
callgrind_control -d "$sg_pid" >/dev/null 2>&1
sleep 0.5
profile=$(ls -t "$work"/cg.out* | head -1)
ir=$(awk '/^summary:/ {print $2}' "$profile")
echo "$([ -n "${POST:-}" ] && echo POST || echo GET) $URL: $((ir / N)) instructions per request in sitegate (callgrind, $N requests)"
[ -n "${PROFILE:-}" ] && cp "$profile" "$PROFILE"
exit 0
