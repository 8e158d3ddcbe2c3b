#!/usr/bin/env bash
# Soak: sitegate with every guard on (the `full` route of benches/lib.sh: API key,
# project schema, model lock, redaction) at 70 % of the maximum requests/s measured at
# the start, for SOAK (10 minutes by default), with a policy reload every 10 s. Passes
# when every request was answered 200, resident memory grew less than 5 % after the
# first minute, and the open file descriptors did not grow.
#
#   bash benches/soak.sh              # SOAK=10m
#   SOAK=2m bash benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK=${SOAK:-10m}
RELOAD=${RELOAD:-1}   # 0: no policy edits
CONNS=${CONNS:-50}
UP_PORT=${UP_PORT:-18180}
SG_PORT=${SG_PORT:-18182}
SG_ADMIN=${SG_ADMIN:-18183}

source benches/lib.sh
install_tools
cargo build --release --quiet --bin sitegate --example upstream
start_upstream "$UP_PORT"
write_policy "$SG_PORT" "$SG_ADMIN" "$UP_PORT"
start_sitegate "$SG_PORT"
write_bodies
url="http://127.0.0.1:$SG_PORT$MODEL_PATH"

# The maximum, then a per-connection pause that brings the rate to 70 % of it.
wrk_script "$work/max.lua" "$work/record.json" "$key"
max=$(wrk -t1 -c"$CONNS" -d10s -s "$work/max.lua" "$url" | awk '/^Requests\/sec/ {print $2}')
target=$(python3 -c "print(round($max * 0.7))")
paced() { # file delay-ms
    wrk_script "$1" "$work/record.json" "$key"
    echo "function delay() return $2 end" >>"$1"
}
delay=$(python3 -c "print(max(1, round($CONNS * 1000 / $target)))")
paced "$work/probe.lua" "$delay"
got=$(wrk -t1 -c"$CONNS" -d5s -s "$work/probe.lua" "$url" | awk '/^Requests\/sec/ {print $2}')
delay=$(python3 -c "print(max(1, round($delay * $got / $target)))")
paced "$work/soak.lua" "$delay"
echo "maximum $max req/s; soaking at about $target req/s ($CONNS connections, ${delay} ms pause each) for $SOAK"

wrk -t1 -c"$CONNS" -d"$SOAK" --latency -s "$work/soak.lua" "$url" >"$work/wrk.out" &
wrk_pid=$!
secs=$(python3 -c "import re; v='$SOAK'; n=int(re.sub('[a-z]','',v)); print(n*{'s':1,'m':60,'h':3600}[v[-1]])")
reloads=0
rss_start="" fds_start=""
for ((t = 10; t <= secs; t += 10)); do
    sleep 10
    kill -0 "$sg_pid" 2>/dev/null || { echo "FAIL: sitegate exited"; exit 1; }
    # A real edit (the content hash changes): the watcher reloads it.
    if [ "$RELOAD" = 1 ]; then
        echo "# soak edit $t" >>"$work/routes.toml"
        reloads=$((reloads + 1))
    fi
    echo "$t $(rss_kib "$sg_pid" VmRSS)" >>"$work/rss.txt"
    if [ "$t" -eq 60 ] || { [ -z "$rss_start" ] && [ "$secs" -lt 60 ]; }; then
        rss_start=$(rss_kib "$sg_pid" VmRSS)
        fds_start=$(fds "$sg_pid")
    fi
done
wait "$wrk_pid" || true
sleep 1
rss_end=$(rss_kib "$sg_pid" VmRSS)
fds_end=$(fds "$sg_pid")
metrics=$(curl -s "http://127.0.0.1:$SG_ADMIN/metrics" 2>/dev/null || python3 -c "
import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$SG_ADMIN/metrics').read().decode())")
ok_reloads=$(awk '/^sitegate_config_reloads_total\{result="ok"\}/ {print $2}' <<<"$metrics")
err_reloads=$(awk '/^sitegate_config_reloads_total\{result="error"\}/ {print $2}' <<<"$metrics")

cat "$work/wrk.out" | grep -E "Requests/sec|requests in|Latency|99%|Non-2xx|Socket errors|STATUS"
growth=$(python3 -c "print(f'{($rss_end - $rss_start) * 100 / $rss_start:.1f}')")
non200=$(awk '/^STATUS/ && $2 != 200 {n += $3} END {print n + 0}' "$work/wrk.out")
sockerr=$(awk '/Socket errors/ {print}' "$work/wrk.out")
echo "reloads: $reloads edits, ${ok_reloads:-0} applied, ${err_reloads:-0} failed"
echo "RSS after the first minute $rss_start KiB, at the end $rss_end KiB ($growth %); by minute (KiB):"
awk '$1 % 60 == 0 {printf " %d", $2} END {print ""}' "$work/rss.txt"
echo "open fds after the first minute $fds_start, at the end $fds_end"
fail=0
[ "$non200" -eq 0 ] || { echo "FAIL: $non200 answers other than 200"; fail=1; }
[ -z "$sockerr" ] || { echo "FAIL: $sockerr"; fail=1; }
python3 -c "import sys; sys.exit(0 if $growth < 5 else 1)" || { echo "FAIL: RSS grew $growth %"; fail=1; }
[ "$fds_end" -le "$fds_start" ] || { echo "FAIL: fds grew from $fds_start to $fds_end"; fail=1; }
[ "${err_reloads:-0}" = 0 ] || { echo "FAIL: a reload failed"; fail=1; }
[ "${ok_reloads:-0}" -ge "$reloads" ] || { echo "FAIL: $reloads edits, ${ok_reloads:-0} reloads"; fail=1; }
if grep -q '"level":"ERROR"' "$work/sitegate.log"; then
    echo "FAIL: sitegate logged errors:"; grep '"level":"ERROR"' "$work/sitegate.log" | head -5; fail=1
fi
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
