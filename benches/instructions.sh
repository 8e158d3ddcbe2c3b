#!/usr/bin/env bash
# sitegate's own CPU work per request, as a count of instructions, beside nginx's for
# the same requests: each proxy in turn runs under valgrind's callgrind in front of
# the same upstream, a Python client sends N requests over 4 keep-alive connections,
# and the count over those requests (user space only: the kernel's part is not
# counted) is divided by N. Unlike requests/s on a shared machine this does not vary
# from run to run by more than about 1 %, so it shows what a change to the request
# path costs or saves, and how far sitegate is from nginx.
#
#   bash benches/instructions.sh                      # small GET, pass-through route
#   URL=/api/redacted bash benches/instructions.sh    # any route of the load policy
#   POST=1 URL=/models/delay-predictor/2.1.0/predict bash benches/instructions.sh
#                                   # POST load.sh's 2 KB record (with its API key)
#   PROFILE=/tmp/cg.out bash benches/instructions.sh  # keep the profile for callgrind_annotate
#   NGINX=0 bash benches/instructions.sh              # sitegate alone
#
# nginx runs as load.sh configures it (proxy_pass with upstream keepalive, access log
# off), with one worker and `master_process off` so callgrind sees the process that
# does the work; it proxies every URL as a pass-through, so for guarded routes the
# ratio is sitegate's guards against nginx's plain proxying.
#
# Installs valgrind and nginx from Debian's packages when they are missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
URL=${URL:-/api/phase9/intelligence}
UP_PORT=${UP_PORT:-18280}
SG_PORT=${SG_PORT:-18282}
SG_ADMIN=${SG_ADMIN:-18283}
NGINX_PORT=${NGINX_PORT:-18284}

source benches/lib.sh
if ! need valgrind; then
    echo "installing valgrind (apt-get)..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
[ "${NGINX:-1}" = 0 ] || install_tools nginx
cargo build --release --quiet --bin sitegate --example upstream

start_upstream "$UP_PORT"
write_policy "$SG_PORT" "$SG_ADMIN" "$UP_PORT"
body=
if [ -n "${POST:-}" ]; then write_bodies; body=$work/record.json; fi
client() { # port requests
    python3 - "$1" "$URL" "$2" "$body" "$key" <<'PY'
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

# Instructions per request of the process $2 (under callgrind, writing $3*) serving
# port $1: a warm-up (connections to the upstream opened, caches filled), then N
# requests counted from zero.
count() { # port pid profile-prefix
    client "$1" 200
    callgrind_control -z "$2" >/dev/null 2>&1
    client "$1" "$N"
    callgrind_control -d "$2" >/dev/null 2>&1
    sleep 0.5
    local profile
    profile=$(ls -t "$3"* | head -1)
    awk -v n="$N" '/^summary:/ {printf "%d", $2 / n}' "$profile"
}

valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    target/release/sitegate run --config "$work/sitegate.toml" >"$work/sitegate.log" 2>&1 &
sg_pid=$!
pids+=($sg_pid)
wait_port "$SG_PORT"
sg=$(count "$SG_PORT" "$sg_pid" "$work/cg.out")
[ -n "${PROFILE:-}" ] && cp "$(ls -t "$work"/cg.out* | head -1)" "$PROFILE"
kill "$sg_pid" 2>/dev/null || true
what="$([ -n "${POST:-}" ] && echo POST || echo GET) $URL"
echo "$what: sitegate $sg instructions per request (callgrind, $N requests)"
[ "${NGINX:-1}" = 0 ] && exit 0

NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
write_nginx_conf "$NGINX_PORT" "$UP_PORT" "daemon off;
master_process off;
worker_processes 1;"
valgrind --tool=callgrind --callgrind-out-file="$work/ng.out" \
    "$NGINX_BIN" -c "$work/nginx.conf" -p "$work" >"$work/nginx.log" 2>&1 &
ng_pid=$!
pids+=($ng_pid)
wait_port "$NGINX_PORT"
ng=$(count "$NGINX_PORT" "$ng_pid" "$work/ng.out")
echo "$what: nginx $ng instructions per request; sitegate/nginx = $(awk -v a="$sg" -v b="$ng" 'BEGIN {printf "%.2f", a / b}')"
exit 0
