#!/usr/bin/env bash
# The memory budget at full scale: 1 000 connections uploading 8 MB JSON bodies to a
# validating route with a 256 MiB buffer_budget, for DURATION. Prints how the requests
# were answered and sitegate's peak RSS, which must stay under budget + 64 MiB.
#
#   bash benches/budget.sh            # DURATION=15s by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15s}
UP_PORT=${UP_PORT:-18090}
SG_PORT=${SG_PORT:-18091}
SG_ADMIN=${SG_ADMIN:-18092}
command -v wrk >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin sitegate --example upstream
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true

target/release/examples/upstream "127.0.0.1:$UP_PORT" >/dev/null &
pids+=($!)
cat >"$work/sitegate.toml" <<TOML
[server]
listen = "127.0.0.1:$SG_PORT"
admin_listen = "127.0.0.1:$SG_ADMIN"
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[limits]
buffer_budget = "256 MiB"
max_body = "16 MiB"
max_records = 200000
[logging]
level = "warn"
[[route]]
name = "upload"
path = "/upload"
schema = "record"
[schema.record]
required = ["id"]
[schema.record.fields]
id = { type = "integer" }
TOML
target/release/sitegate run --config "$work/sitegate.toml" >"$work/sitegate.log" 2>&1 &
sg=$!
pids+=($sg)
sleep 1
python3 - "$work/body.json" <<'PY'
import sys
rec = '{"id":1,"note":"0123456789012345678901234567890123456789012345678901234567890123"},'
n = 8_000_000 // len(rec)
open(sys.argv[1], "w").write("[" + (rec * n)[:-1] + "]")
PY
cat >"$work/post.lua" <<LUA
local f = io.open("$work/body.json", "rb")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = f:read("*a")
f:close()
local codes = {}
response = function(status) codes[status] = (codes[status] or 0) + 1 end
done = function() for c, n in pairs(codes) do io.write(string.format("status %d: %d\\n", c, n)) end end
LUA
echo "wrk -t2 -c1000 -d$DURATION, 8 MB JSON bodies, buffer_budget 256 MiB"
wrk -t2 -c1000 -d"$DURATION" --timeout 30s -s "$work/post.lua" "http://127.0.0.1:$SG_PORT/upload" | grep -E "requests in|Non-2xx|Socket errors|status"
echo "sitegate peak RSS: $(awk '/VmHWM/ {print int($2/1024)}' /proc/$sg/status) MiB (limit: 256 + 64 = 320 MiB)"
