#!/usr/bin/env bash
# Faults under load: sitegate in front of the fast upstream, with wrk driving a route
# with a fallback and one without, while each fault below happens. For each, the
# answers are counted: from the app, fallbacks (X-Sitegate-Fallback), sitegate's own
# JSON errors (DESIGN §5), anything else, and wrk's socket errors (resets, hangs past
# 5 s). Passes when there is no "other", no socket error, sitegate is still up, and
# sitegate itself closed every slow or silent client connection.
#
#   bash benches/faults.sh            # each fault under PHASE (12 s) of load
#
# 1 the app killed and restarted (twice)      5 10 000 idle client connections
# 2 the app accepting but never answering     6 a corrupt policy file written mid-run
# 3 the app answering 1 byte a second         7 the policy directory swapped the way a
# 4 slowloris clients (headers 1 byte/s)        Kubernetes ConfigMap update does it
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE=${PHASE:-12}
UP_PORT=${UP_PORT:-18280}
SG_PORT=${SG_PORT:-18282}
SG_ADMIN=${SG_ADMIN:-18283}

source benches/lib.sh
install_tools
cargo build --release --quiet --bin sitegate --example upstream
ulimit -n 65536 2>/dev/null || true
start_upstream "$UP_PORT"

# The policy, laid out as kubelet lays out a mounted ConfigMap: the files are
# symlinks through `..data`, itself a symlink to a timestamped directory.
policy_version() { # dir fallback-note
    mkdir -p "$1"
    cat >"$1/sitegate.toml" <<TOML
include = ["routes.toml"]
[server]
listen = "127.0.0.1:$SG_PORT"
admin_listen = "127.0.0.1:$SG_ADMIN"
header_read_timeout = "2s"
shutdown_grace = "5s"
[upstream]
url = "http://127.0.0.1:$UP_PORT"
connect_timeout = "500ms"
timeout = "1s"
[upstream.circuit]
consecutive_failures = 5
open_for = "1s"
max_open_for = "2s"
[logging]
level = "warn"
TOML
    cat >"$1/routes.toml" <<TOML
[[route]]
name = "with-fallback"
path = "/api/phase9/intelligence"
fallback = { body = '{"status":"degraded","note":"$2"}', status = 200 }

[[route]]
name = "without"
path = "/api/phase12/delay-prediction"
TOML
}
mkdir -p "$work/policy"
policy_version "$work/policy/..v1" "v1"
ln -s ..v1 "$work/policy/..data"
ln -s ..data/sitegate.toml "$work/policy/sitegate.toml"
ln -s ..data/routes.toml "$work/policy/routes.toml"
target/release/sitegate check --config "$work/policy/sitegate.toml" >/dev/null
target/release/sitegate run --config "$work/policy/sitegate.toml" >"$work/sitegate.log" 2>&1 &
sg_pid=$!
pids+=($sg_pid)
wait_port "$SG_PORT"

# Counts answers: app (200 without the fallback header), fallback, sitegate's JSON
# errors (502/503/504 with an "error" object), other.
cat >"$work/count.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) app, fallback, errors, other = 0, 0, 0, 0 end
function response(status, headers, body)
    if headers["X-Sitegate-Fallback"] or headers["x-sitegate-fallback"] then
        fallback = fallback + 1
    elseif status == 200 then
        app = app + 1
    elseif (status == 502 or status == 503 or status == 504) and body:find('"error"', 1, true) then
        errors = errors + 1
    else
        other = other + 1
    end
end
function done(summary, latency, requests)
    local a, f, e, o = 0, 0, 0, 0
    for _, t in ipairs(threads) do
        a = a + t:get("app"); f = f + t:get("fallback"); e = e + t:get("errors"); o = o + t:get("other")
    end
    local s = summary.errors
    io.write(string.format("COUNTS %d %d %d %d %d\n", a, f, e, o,
        s.connect + s.read + s.write + s.timeout))
end
LUA

# Load on both routes for PHASE seconds while "$@" runs; prints the counts.
fails=0
under_load() { # name command...
    local name=$1
    shift
    wrk -t1 -c8 -d"${PHASE}s" --timeout 5s -s "$work/count.lua" \
        "http://127.0.0.1:$SG_PORT/api/phase9/intelligence" >"$work/a.out" 2>&1 &
    local w1=$!
    wrk -t1 -c8 -d"${PHASE}s" --timeout 5s -s "$work/count.lua" \
        "http://127.0.0.1:$SG_PORT/api/phase12/delay-prediction" >"$work/b.out" 2>&1 &
    local w2=$!
    sleep 1
    "$@"
    wait "$w1" "$w2" || true
    read -r a f e o s < <(cat "$work/a.out" "$work/b.out" | awk '/^COUNTS/ {a+=$2; f+=$3; e+=$4; o+=$5; s+=$6} END {print a+0, f+0, e+0, o+0, s+0}')
    local alive=up
    kill -0 "$sg_pid" 2>/dev/null || alive=DOWN
    local verdict=ok
    if [ "$o" -ne 0 ] || [ "$s" -ne 0 ] || [ "$alive" != up ] || [ "${check_fail:-0}" = 1 ]; then
        verdict=FAIL
        fails=$((fails + 1))
    fi
    check_fail=0
    printf '%-28s app %7d  fallback %6d  sitegate error %6d  other %d  socket errors %d  sitegate %s  %s%s\n' \
        "$name" "$a" "$f" "$e" "$o" "$s" "$alive" "$verdict" "${extra:-}"
    extra=""
}

restart_app() {
    for _ in 1 2; do
        sleep 2
        kill "$up_pid"; wait "$up_pid" 2>/dev/null || true
        sleep 2
        start_upstream "$UP_PORT"
    done
}

# A stand-in app on the upstream port that misbehaves ($1: blackhole | trickle).
bad_app() { # mode seconds
    kill "$up_pid"; wait "$up_pid" 2>/dev/null || true
    python3 - "$UP_PORT" "$1" "$2" <<'PY' &
import socket, sys, threading, time
port, mode, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(1024); srv.settimeout(0.2)
held = []
def trickle(c):
    try:
        for b in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}":
            c.sendall(bytes([b])); time.sleep(1)
    except OSError:
        pass
end = time.time() + secs
while time.time() < end:
    try:
        c, _ = srv.accept()
    except socket.timeout:
        continue
    held.append(c)   # blackhole: accepted, never answered
    if mode == "trickle":
        threading.Thread(target=trickle, args=(c,), daemon=True).start()
PY
    local bad=$!
    sleep "$2"
    wait "$bad" 2>/dev/null || true
    start_upstream "$UP_PORT"
}

# Client connections that are slow (slowloris) or idle; reports how many sitegate
# closed by itself within its header_read_timeout (2 s) plus a margin.
clients() { # slowloris|idle count
    extra=$(python3 - "$SG_PORT" "$1" "$2" <<'PY'
import socket, sys, time
port, mode, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port)); s.setblocking(False); conns.append(s)
start = time.time(); closed = set()
head = b"GET /api/phase9/intelligence HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 64
i = 0
while time.time() - start < 6 and len(closed) < n:
    for k, s in enumerate(conns):
        if k in closed: continue
        try:
            if mode == "slowloris" and i < len(head): s.send(head[i:i+1])
            if s.recv(4096) == b"": closed.add(k)
        except BlockingIOError: pass
        except OSError: closed.add(k)
    i += 1
    time.sleep(1 if mode == "slowloris" else 0.2)
print(f"  ({len(closed)}/{n} {mode} connections closed by sitegate within {time.time()-start:.0f} s)")
PY
)
    # Each must have been closed by sitegate (header_read_timeout is 2 s).
    [[ "$extra" == *"($2/$2 "* ]] || check_fail=1
}

corrupt_policy() {
    cp "$work/policy/..v1/routes.toml" "$work/routes.good"
    printf '[[route]]\nname = "broken"\npath = \n' >"$work/policy/..v1/routes.toml"
    sleep 3
    local result
    result=$(python3 -c "
import json, urllib.request
print(json.load(urllib.request.urlopen('http://127.0.0.1:$SG_ADMIN/config'))['last_reload']['result'])")
    cp "$work/routes.good" "$work/policy/..v1/routes.toml"
    extra="  (while corrupt: last_reload $result, the old policy kept serving)"
    [ "$result" = error ] || check_fail=1
}

configmap_swap() {
    local before
    before=$(python3 -c "
import json, urllib.request
print(json.load(urllib.request.urlopen('http://127.0.0.1:$SG_ADMIN/config'))['version'])")
    policy_version "$work/policy/..v2" "v2"
    ln -s ..v2 "$work/policy/..data_tmp"
    mv -T "$work/policy/..data_tmp" "$work/policy/..data"
    sleep 3
    local note
    note=$(python3 -c "
import json, urllib.request
print(json.load(urllib.request.urlopen('http://127.0.0.1:$SG_ADMIN/config'))['version'])")
    extra="  (policy version $before -> $note)"
    [ "$note" != "$before" ] || check_fail=1
}

echo "faults under load, ${PHASE} s each, 2 x 8 connections; $(date -u +%FT%TZ)"
under_load "baseline" sleep 0
under_load "1 app killed and restarted" restart_app
under_load "2 app never answers" bad_app blackhole 6
under_load "3 app answers 1 byte/s" bad_app trickle 6
under_load "4 slowloris clients" clients slowloris 200
under_load "5 10 000 idle connections" clients idle 10000
under_load "6 corrupt policy file" corrupt_policy
under_load "7 ConfigMap-style swap" configmap_swap
if grep -q '"level":"ERROR"' "$work/sitegate.log"; then
    echo "sitegate logged errors:"; grep '"level":"ERROR"' "$work/sitegate.log" | head -5
fi
[ "$fails" -eq 0 ] && echo "PASS" || echo "FAIL: $fails fault(s)"
exit "$fails"
