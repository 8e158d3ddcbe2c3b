#!/usr/bin/env bash
# Side-by-side load test on this machine: a fast static upstream (examples/upstream.rs),
# nginx in front of it (proxy_pass with upstream keepalive), and sitegate in front of it
# (pass-through, redacting, validating, and the full policy), each driven by wrk with
# the same settings, in one run: GET small JSON, POST a 2 KB record, POST a 1 000-record
# batch, GET a 1 MiB response, and GET over a single connection.
#
#   bash benches/load.sh            # 10 s per case, 50 connections
#   DURATION=30s CONNS=100 bash benches/load.sh
#
# Installs wrk and nginx from Debian's packages when they are missing (needs root).
# Prints requests/s, p50/p99/p99.9 latency and the CPU the process under test spent per
# request (user and kernel) per case, with the rest of the machine's CPU per request
# (the upstream, everything else, idle), the ratios, the CPU budget a proxy has for 1.2x
# nginx's requests/s, the latency sitegate and nginx add at one connection, and
# sitegate's idle and peak RSS. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1}
UP_PORT=${UP_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
SG_PORT=${SG_PORT:-18082}
SG_ADMIN=${SG_ADMIN:-18083}

source benches/lib.sh
install_tools nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet --bin sitegate --example upstream

start_upstream "$UP_PORT"

write_nginx_conf "$NGINX_PORT" "$UP_PORT" "worker_processes auto;"
"$NGINX" -c "$work/nginx.conf" -p "$work"
wait_port "$NGINX_PORT"

write_policy "$SG_PORT" "$SG_ADMIN" "$UP_PORT"
start_sitegate "$SG_PORT"
idle_rss=$(rss_kib "$sg_pid" VmRSS)

write_bodies
wrk_script "$work/get.lua"
wrk_script "$work/post.lua" "$work/record.json"
wrk_script "$work/post-key.lua" "$work/record.json" "$key"
wrk_script "$work/batch.lua" "$work/batch.json"
wrk_script "$work/batch-key.lua" "$work/batch.json" "$key"

declare -A RPS P50 P99 P999 N CPU_PROXY CPU_UP CPU_REST CPU_IDLE
run_case() { # name url script conns pids...
    local name=$1 url=$2 script=$3 conns=$4
    shift 4
    local args=(-t"$THREADS" -c"$conns" --latency -s "$script")
    wrk "${args[@]}" -d3s "$url" >/dev/null 2>&1 || true   # warm-up of pools and caches
    local out before after up_before up_after m_before m_after
    before=$(ticks "$@")
    up_before=$(ticks "$up_pid")
    m_before=$(machine_ticks)
    out=$(wrk "${args[@]}" -d"$DURATION" "$url")
    after=$(ticks "$@")
    up_after=$(ticks "$up_pid")
    m_after=$(machine_ticks)
    RPS[$name]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    P50[$name]=$(awk '$1=="50%" {print $2}' <<<"$out")
    P99[$name]=$(awk '$1=="99%" {print $2}' <<<"$out")
    P999[$name]=$(awk '$1=="P999" {printf "%.2fms", $2/1000}' <<<"$out")
    local n errors cpu
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr -s ' ' | tr '\n' ' ')
    # CPU of the process under test per request, split into user and kernel time.
    cpu=$(python3 -c "b='$before'.split(); a='$after'.split(); n=$n; hz=$hz
print(f'{(int(a[0])-int(b[0]))/hz/n*1e6:6.1f} user + {(int(a[1])-int(b[1]))/hz/n*1e6:6.1f} sys us/req')")
    # Where the whole machine's CPU went per request: the process under test, the
    # upstream, the rest (wrk, softirq time the kernel charges to no process, other
    # tasks) and idle. With the cores saturated these add up to cores / requests/s.
    read -r "CPU_PROXY[$name]" "CPU_UP[$name]" "CPU_REST[$name]" "CPU_IDLE[$name]" < <(python3 -c "
n=$n; hz=$hz
d=lambda a, b: sum(map(int, a.split())) - sum(map(int, b.split()))
proxy = 0 if '$*' == '$up_pid' else d('$after', '$before')
up = d('$up_after', '$up_before')
busy, idle = (int(a) - int(b) for a, b in zip('$m_after'.split(), '$m_before'.split()))
us = lambda t: t / hz / n * 1e6
print(f'{us(proxy):.1f} {us(up):.1f} {us(busy - proxy - up):.1f} {us(idle):.1f}')")
    N[$name]=$n
    printf '%-17s %9s req/s  p50 %-8s p99 %-8s p99.9 %-9s %s | upstream %s, rest %s, idle %s %s\n' \
        "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "${P999[$name]}" "$cpu" \
        "${CPU_UP[$name]}" "${CPU_REST[$name]}" "${CPU_IDLE[$name]}" "$errors"
}

UP="http://127.0.0.1:$UP_PORT"
NG="http://127.0.0.1:$NGINX_PORT"
SG="http://127.0.0.1:$SG_PORT"
nginx_pids=$(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')
C=$CONNS
MODEL=$MODEL_PATH
echo "wrk -t$THREADS -c$CONNS -d$DURATION on $(nproc) cores; $(date -u +%FT%TZ)"
echo "-- GET small JSON"
run_case direct-get "$UP/api/phase9/intelligence" "$work/get.lua" "$C" "$up_pid"
run_case nginx-get "$NG/api/phase9/intelligence" "$work/get.lua" "$C" $nginx_pids
run_case sitegate-get "$SG/api/phase9/intelligence" "$work/get.lua" "$C" "$sg_pid"
run_case redacted-get "$SG/api/redacted" "$work/get.lua" "$C" "$sg_pid"
echo "-- POST a 2 KB record"
run_case direct-post "$UP/api/phase9/intelligence" "$work/post.lua" "$C" "$up_pid"
run_case nginx-post "$NG/api/phase9/intelligence" "$work/post.lua" "$C" $nginx_pids
run_case sitegate-post "$SG/api/phase9/intelligence" "$work/post.lua" "$C" "$sg_pid"
run_case validated-post "$SG/api/validated" "$work/post.lua" "$C" "$sg_pid"
run_case full-post "$SG$MODEL" "$work/post-key.lua" "$C" "$sg_pid"
echo "-- POST a batch of 1 000 records (2 MB)"
run_case direct-batch "$UP/api/phase9/intelligence" "$work/batch.lua" 8 "$up_pid"
run_case nginx-batch "$NG/api/phase9/intelligence" "$work/batch.lua" 8 $nginx_pids
run_case sitegate-batch "$SG/api/phase9/intelligence" "$work/batch.lua" 8 "$sg_pid"
run_case validated-batch "$SG/api/validated" "$work/batch.lua" 8 "$sg_pid"
run_case full-batch "$SG$MODEL" "$work/batch-key.lua" 8 "$sg_pid"
echo "-- GET a 1 MiB response"
run_case direct-big "$UP/big" "$work/get.lua" 8 "$up_pid"
run_case nginx-big "$NG/big" "$work/get.lua" 8 $nginx_pids
run_case sitegate-big "$SG/big" "$work/get.lua" 8 "$sg_pid"
run_case redacted-big "$SG/api/redacted/big" "$work/get.lua" 8 "$sg_pid"
echo "-- GET small JSON over one connection (added latency)"
run_case direct-1conn "$UP/api/phase9/intelligence" "$work/get.lua" 1 "$up_pid"
run_case nginx-1conn "$NG/api/phase9/intelligence" "$work/get.lua" 1 $nginx_pids
run_case sitegate-1conn "$SG/api/phase9/intelligence" "$work/get.lua" 1 "$sg_pid"
peak_rss=$(rss_kib "$sg_pid" VmHWM)

ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
us() { python3 -c "
v='$1'
f = float(v[:-2]) * 1000 if v.endswith('ms') else float(v[:-2]) if v.endswith('us') else float(v[:-1]) * 1e6
print(f)"; }
echo
for kind in get post batch big; do
    echo "$kind: sitegate/nginx requests/s = $(ratio "${RPS[sitegate-$kind]}" "${RPS[nginx-$kind]}")x," \
         "sitegate/direct = $(ratio "${RPS[sitegate-$kind]}" "${RPS[direct-$kind]}")x," \
         "p99 sitegate ${P99[sitegate-$kind]} vs nginx ${P99[nginx-$kind]}"
done
echo "validated/pass-through: post $(ratio "${RPS[validated-post]}" "${RPS[sitegate-post]}")x," \
     "batch $(ratio "${RPS[validated-batch]}" "${RPS[sitegate-batch]}")x;" \
     "redacted/pass-through: get $(ratio "${RPS[redacted-get]}" "${RPS[sitegate-get]}")x," \
     "1 MiB $(ratio "${RPS[redacted-big]}" "${RPS[sitegate-big]}")x"
echo "full policy/nginx pass-through: post $(ratio "${RPS[full-post]}" "${RPS[nginx-post]}")x," \
     "batch $(ratio "${RPS[full-batch]}" "${RPS[nginx-batch]}")x"
# The CPU budget: what a proxy may spend per request to make 1.2x nginx's requests/s,
# given what the upstream, wrk and the rest of the machine spend per request around it
# (taken from sitegate's own run of the case) and the idle time left.
for kind in get post; do
    python3 -c "
cores, rps = $(nproc), float('${RPS[nginx-$kind]}')
around = ${CPU_UP[sitegate-$kind]} + ${CPU_REST[sitegate-$kind]} + ${CPU_IDLE[sitegate-$kind]}
budget = cores * 1e6 / (1.2 * rps) - around
print(f'$kind: CPU per request (us) nginx ${CPU_PROXY[nginx-$kind]}, sitegate ${CPU_PROXY[sitegate-$kind]};'
      f' around the proxy (upstream, wrk and the rest, idle) ${CPU_UP[sitegate-$kind]} + ${CPU_REST[sitegate-$kind]} + ${CPU_IDLE[sitegate-$kind]};'
      f' 1.2x nginx leaves a proxy {budget:.1f} us')"
done
added=$(python3 -c "print(f'{$(us "${P50[sitegate-1conn]}") - $(us "${P50[direct-1conn]}"):.0f}')")
added_ng=$(python3 -c "print(f'{$(us "${P50[nginx-1conn]}") - $(us "${P50[direct-1conn]}"):.0f}')")
echo "added p50 latency at one connection: sitegate ${added} us, nginx ${added_ng} us"
echo "sitegate RSS: idle $((idle_rss / 1024)) MiB ($idle_rss KiB), peak under load $((peak_rss / 1024)) MiB"
if grep -q '"level":"ERROR"' "$work/sitegate.log"; then
    echo "sitegate logged errors:"; grep '"level":"ERROR"' "$work/sitegate.log" | head -5
fi
