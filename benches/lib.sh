# Shared by the scripts in benches/ (sourced, not run): tools, the upstream, the
# sitegate policy with every guard on, and the probes the scripts report.
# Every script listens on 127.0.0.1 only and cleans up what it started.

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# wrk (and nginx when asked) from Debian's packages, when missing (needs root).
install_tools() { # [nginx]
    local pkgs=()
    need wrk || pkgs+=(wrk)
    [ "${1:-}" = nginx ] && ! need nginx && pkgs+=(nginx-light)
    [ ${#pkgs[@]} -eq 0 ] && return 0
    echo "installing ${pkgs[*]} (apt-get)..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

# A scratch directory and the processes to stop on exit.
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true
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

# The fast static upstream (examples/upstream.rs) on $1; sets up_pid.
start_upstream() {
    target/release/examples/upstream "127.0.0.1:$1" >/dev/null &
    up_pid=$!
    pids+=($up_pid)
    wait_port "$1"
}

# nginx, the reference reverse proxy, configured the way an operator would for this:
# upstream keepalive, and bodies streamed both ways as sitegate's pass-through does
# (nginx's default buffers a body over 16 KB to a temporary file); the access log off.
# The lines of "$3" open the file (the process model: `worker_processes auto;`, or one
# worker in the foreground for callgrind).
write_nginx_conf() { # listen-port upstream-port top-level-directives
    cat >"$work/nginx.conf" <<NGINXCONF
$3
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream app { server 127.0.0.1:$2; keepalive 128; }
    server {
        listen 127.0.0.1:$1;
        client_max_body_size 10m;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_request_buffering off;
            proxy_buffering off;
        }
    }
}
NGINXCONF
}

# sitegate's policy in $work, one route per way of running it:
#   pass       a pass-through route (no guard, no redaction; unmatched paths such as
#              "/big" pass too)
#   redacted   the same with response redaction (GET small, and 1 MiB at /big)
#   validated  the shipped `project` schema with sanitize, one record or a batch
#   full       the shipped policy's guards on one route: API key, the project schema,
#              the model lock (a locked version from config/models.toml), redaction
# The access log is at warn, so it costs what nginx's "access_log off" costs. Sets
# $key, the API key the full route wants.
write_policy() { # listen-port admin-port upstream-port
    key="sg-load-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    printf '%s load\n' "$(printf %s "$key" | sha256sum | cut -d' ' -f1)" >"$work/keys.txt"
    cp config/models.toml "$work/models.toml"
    cat >"$work/sitegate.toml" <<TOML
include = ["routes.toml", "models.toml"]
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
[upstream]
url = "http://127.0.0.1:$3"
[logging]
level = "warn"
[redaction]
responses = false
[access]
api_keys_file = "keys.txt"
TOML
    cat >"$work/routes.toml" <<TOML
[[route]]
name = "pass"
path = "/api/phase9/intelligence"

[[route]]
name = "redacted"
path = "/api/redacted"
redact = true

[[route]]
name = "redacted-big"
path = "/api/redacted/big"
redact = true

[[route]]
name = "validated"
path = "/api/validated"
methods = ["POST"]
content_types = ["application/json"]
schema = "project"
sanitize = true
max_string = 4000
batch = { max_records = 10000, on_invalid = "reject" }

[[route]]
name = "full"
path = "/models/{name}/{version}/predict"
methods = ["POST"]
content_types = ["application/json"]
auth = "api_key"
schema = "project"
sanitize = true
max_string = 4000
batch = { max_records = 10000, on_invalid = "reject" }
model = { action = "inference", name = "path:name", version = "path:version" }
redact = true

$(sed -n '/^\[schema.project\]/,$p' config/routes.toml)
TOML
    target/release/sitegate check --config "$work/sitegate.toml" >/dev/null
}

# sitegate on $work/sitegate.toml; sets sg_pid.
start_sitegate() { # listen-port
    # As deploy/ runs it: two glibc malloc arenas (MALLOC_ARENA_MAX=16 gives glibc's
    # default on two cores, 8 per core).
    MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2} \
        target/release/sitegate run --config "$work/sitegate.toml" >"$work/sitegate.log" 2>&1 &
    sg_pid=$!
    pids+=($sg_pid)
    wait_port "$1"
    sleep 0.5
}

MODEL_PATH=/models/delay-predictor/2.1.0/predict

# Request bodies: a 2 KB project record, and a batch of 1 000 of them (about 2 MB).
write_bodies() {
    python3 - "$work" <<'PY'
import json, sys
rec = {"project_id": "P001", "project_name": "Bridge", "budget": 1200000,
       "scheduled_duration_days": 400, "phase": "construction",
       "start_date": "2026-03-01T08:00:00Z", "notes": "x" * 1800}
open(sys.argv[1] + "/record.json", "w").write(json.dumps(rec))
open(sys.argv[1] + "/batch.json", "w").write(json.dumps([dict(rec, project_id=f"P{i:06}") for i in range(1000)]))
PY
}

# A wrk script: every one reports p99.9 (wrk's --latency stops at p99) and counts the
# answers by status ("STATUS 200 n" lines) across threads.
WRK_REPORT='
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
    io.write(string.format("P999 %.0f\n", latency:percentile(99.9)))
    local total = {}
    for _, t in ipairs(threads) do
        for s, n in pairs(t:get("statuses")) do total[s] = (total[s] or 0) + n end
    end
    for s, n in pairs(total) do io.write(string.format("STATUS %d %d\n", s, n)) end
end'
wrk_script() { # file [body-file [api-key]]
    {
        if [ -n "${2:-}" ]; then
            echo 'wrk.method = "POST"'
            echo 'wrk.headers["Content-Type"] = "application/json"'
            [ -n "${3:-}" ] && echo "wrk.headers[\"X-API-Key\"] = \"$3\""
            echo "local f = io.open(\"$2\", \"rb\"); wrk.body = f:read(\"*a\"); f:close()"
        fi
        echo "$WRK_REPORT"
    } >"$1"
}

rss_kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
# CPU ticks (user, system) used so far by a set of processes.
ticks() { local u=0 s=0; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }
hz=$(getconf CLK_TCK)
# The whole machine's CPU ticks so far: busy (user, nice, system, irq, softirq, steal)
# and idle (idle, iowait).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }
