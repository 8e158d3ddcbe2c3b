#!/usr/bin/env bash
# Side-by-side load test on this machine: a fast static upstream (examples/upstream.rs),
# nginx in front of it (proxy_pass with upstream keepalive), and sitegate in front of it
# (a pass-through route), each driven by wrk with the same settings, in one run.
#
#   bash benches/load.sh            # 10 s per case, 50 connections
#   DURATION=30s CONNS=100 bash benches/load.sh
#
# Installs wrk and nginx from Debian's packages when they are missing (needs root).
# Prints requests/s, p50/p99 latency and the CPU the process under test spent per
# request (user and kernel) per case, the sitegate/nginx ratios, and sitegate's idle and
# peak RSS. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1}
UP_PORT=${UP_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
SG_PORT=${SG_PORT:-18082}
SG_ADMIN=${SG_ADMIN:-18083}

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if ! need wrk || ! need nginx; then
    echo "installing wrk and nginx (apt-get)..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet --bin sitegate --example upstream
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

# The upstream.
target/release/examples/upstream "127.0.0.1:$UP_PORT" >/dev/null &
up_pid=$!
pids+=($up_pid)
wait_port "$UP_PORT"

# nginx: the reference reverse proxy, configured the way an operator would for this.
cat >"$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream app { server 127.0.0.1:$UP_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        client_max_body_size 10m;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
NGINX
"$NGINX" -c "$work/nginx.conf" -p "$work"
wait_port "$NGINX_PORT"

# sitegate: a pass-through route (no guard, no redaction) and the same route with
# response redaction; access log at warn so it costs what nginx's "access_log off"
# costs.
cat >"$work/sitegate.toml" <<TOML
[server]
listen = "127.0.0.1:$SG_PORT"
admin_listen = "127.0.0.1:$SG_ADMIN"
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[logging]
level = "warn"
[redaction]
responses = false
[[route]]
name = "redacted"
path = "/api/redacted"
redact = true
TOML
target/release/sitegate run --config "$work/sitegate.toml" >"$work/sitegate.log" 2>&1 &
sg_pid=$!
pids+=($sg_pid)
wait_port "$SG_PORT"
sleep 0.5
rss_kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
idle_rss=$(rss_kib "$sg_pid" VmRSS)

# 2 KB JSON body for the POST case.
body=$(python3 -c 'import json; print(json.dumps({"project_id":"P001","project_name":"Bridge","budget":1200000,"scheduled_duration_days":400,"notes":"x"*1850}))')
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$body]]
LUA

# CPU ticks (user, system) used so far by a set of processes.
ticks() { local u=0 s=0; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }
hz=$(getconf CLK_TCK)

declare -A RPS P50 P99
run_case() { # name url script pids...
    local name=$1 url=$2 script=$3
    shift 3
    local args=(-t"$THREADS" -c"$CONNS" -d3s --latency)
    [ -n "$script" ] && args+=(-s "$script")
    wrk "${args[@]}" "$url" >/dev/null 2>&1 || true   # warm-up of pools and caches
    local out before after
    before=$(ticks "$@")
    out=$(wrk "${args[@]}" -d"$DURATION" "$url")
    after=$(ticks "$@")
    RPS[$name]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    P50[$name]=$(awk '$1=="50%" {print $2}' <<<"$out")
    P99[$name]=$(awk '$1=="99%" {print $2}' <<<"$out")
    local n errors cpu
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    # CPU of the process under test per request, split into user and kernel time.
    cpu=$(python3 -c "b='$before'.split(); a='$after'.split(); n=$n; hz=$hz
print(f'{(int(a[0])-int(b[0]))/hz/n*1e6:5.1f} user + {(int(a[1])-int(b[1]))/hz/n*1e6:5.1f} sys us/req')")
    printf '%-15s %10s req/s  p50 %-9s p99 %-9s  %s %s\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "$cpu" "$errors"
}

echo "wrk -t$THREADS -c$CONNS -d$DURATION on $(nproc) cores; $(date -u +%FT%TZ)"
for kind in get post; do
    script=""
    [ "$kind" = post ] && script="$work/post.lua"
    run_case "direct-$kind" "http://127.0.0.1:$UP_PORT/api/phase9/intelligence" "$script" "$up_pid"
    run_case "nginx-$kind" "http://127.0.0.1:$NGINX_PORT/api/phase9/intelligence" "$script" $(pgrep -P "$(cat "$work/nginx.pid")")
    run_case "sitegate-$kind" "http://127.0.0.1:$SG_PORT/api/phase9/intelligence" "$script" "$sg_pid"
    run_case "redacted-$kind" "http://127.0.0.1:$SG_PORT/api/redacted" "$script" "$sg_pid"
done
peak_rss=$(rss_kib "$sg_pid" VmHWM)

ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
echo
for kind in get post; do
    echo "$kind: sitegate/nginx requests/s = $(ratio "${RPS[sitegate-$kind]}" "${RPS[nginx-$kind]}")x," \
         "sitegate/direct = $(ratio "${RPS[sitegate-$kind]}" "${RPS[direct-$kind]}")x," \
         "p99 sitegate ${P99[sitegate-$kind]} vs nginx ${P99[nginx-$kind]};" \
         "redacted/pass-through = $(ratio "${RPS[redacted-$kind]}" "${RPS[sitegate-$kind]}")x"
done
echo "sitegate RSS: idle $((idle_rss / 1024)) MiB ($idle_rss KiB), peak under load $((peak_rss / 1024)) MiB"
if grep -q '"level":"ERROR"' "$work/sitegate.log"; then
    echo "sitegate logged errors:"; grep '"level":"ERROR"' "$work/sitegate.log" | head -5
fi
