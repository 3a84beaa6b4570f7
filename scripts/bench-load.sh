#!/usr/bin/env bash
# `stagegate load` beside wrk, hey and oha, in one run on this machine.
#
# A loopback nginx (one worker, a 13-byte static file) runs pinned to SERVER_CPU; each
# client runs pinned to CLIENT_CPU with the same duration and connection count, ROUNDS
# times, interleaved, and the median round is shown: requests/s, client CPU seconds (user +
# system, from /usr/bin/time) per 10,000 requests, and both as ratios to wrk's. Then:
#   - memory: peak RSS of `stagegate load -n BIG_REQUESTS` and its histogram's size;
#   - accuracy: p50 against a server that answers after exactly 10 ms;
#   - coordinated omission: p99 in the open model at 1,000 requests/s against a server
#     that freezes once for 1 s, and the same server under the closed model.
#
# Usage: bash scripts/bench-load.sh        (as root, it installs nginx, wrk, hey and time)
# Settings (environment): DURATION=5 CONNS=64 ROUNDS=3 SERVER_CPU=0 CLIENT_CPU=1
#   BIG_REQUESTS=10000000 STALL_MS=1000 OPEN_RATE=1000 STALL_RUN=10 SKIP_OHA=
# The machine is shared and noisy: compare tools only within one run.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BIG_REQUESTS=${BIG_REQUESTS:-10000000}
STALL_MS=${STALL_MS:-1000}
OPEN_RATE=${OPEN_RATE:-1000}
STALL_RUN=${STALL_RUN:-10}
PORT=${PORT:-18190}

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  [ "$(id -u)" = 0 ] || return 1
  apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; }
}
have nginx || apt_install nginx || die "nginx is missing: apt-get install nginx"
have wrk || apt_install wrk || die "wrk is missing: apt-get install wrk"
have hey || apt_install hey || say "note: hey is missing and could not be installed; skipped"
[ -x /usr/bin/time ] || apt_install time || die "/usr/bin/time is missing: apt-get install time"
have taskset || die "taskset is missing (util-linux)"
have python3 || die "python3 is missing"
if [ -z "${SKIP_OHA:-}" ] && ! have oha; then
  say "installing oha with cargo install (takes a few minutes)..."
  cargo install oha --locked >/dev/null 2>&1 || say "note: oha could not be installed; skipped"
fi
[ -n "${SKIP_OHA:-}" ] && say "note: SKIP_OHA is set; oha skipped"

say "building stagegate (release)..."
cargo build --release -q -p stagegate-cli
cargo build --release -q -p stagegate-load --example target_server
SG=$PWD/target/release/stagegate
TARGET=$PWD/target/release/examples/target_server

# --- the server ------------------------------------------------------------------------
mkdir -p "$work/www"
printf 'hello, world\n' >"$work/www/index.html"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  server {
    listen 127.0.0.1:$PORT;
    root $work/www;
    location / { index index.html; }
  }
}
EOF
taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
URL=http://127.0.0.1:$PORT/
wait_for() {
  for _ in $(seq 100); do
    python3 - "$1" <<'PY' 2>/dev/null && return 0
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1).read()
PY
    sleep 0.1
  done
  die "no answer from $1"
}
wait_for "$URL"

# --- throughput and CPU ----------------------------------------------------------------
results=$work/results
: >"$results"
# run NAME COMMAND...: runs pinned, records requests, reported rps and CPU seconds.
run() {
  local name=$1
  shift
  taskset -c "$CLIENT_CPU" /usr/bin/time -f '%U %S %M' -o "$work/time" "$@" >"$work/out" 2>"$work/err" || true
  python3 - "$name" "$work/out" "$work/time" >>"$results" <<'PY'
import json, re, sys
name, out, timef = sys.argv[1:4]
text = open(out).read()
user, sys_, rss = open(timef).read().split()[-3:]
cpu = float(user) + float(sys_)
if name == "wrk":
    n = int(re.search(r"(\d+) requests in", text).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
elif name == "hey":
    n = sum(int(x) for x in re.findall(r"\[\d+\]\s+(\d+) responses", text))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
elif name == "oha":
    j = json.loads(text)
    n = sum(j["statusCodeDistribution"].values())
    rps = j["summary"]["requestsPerSec"]
else:
    j = json.loads(text)
    n = j["summary"]["requests"]
    rps = j["summary"]["rps"]
print(name, n, rps, cpu)
PY
}

echo "stagegate load benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:   nproc $(nproc), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "tools:     $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(nginx -v 2>&1 | cut -d' ' -f3), $(have oha && oha --version | head -1 || echo 'no oha'), hey (Debian $(dpkg-query -W -f='${Version}' hey 2>/dev/null || echo '?')), $("$SG" --version)"
tools=(wrk stagegate)
have hey && tools+=(hey)
have oha && [ -z "${SKIP_OHA:-}" ] && tools+=(oha)
say "throughput: ${tools[*]}, $CONNS connections, ${DURATION}s, $ROUNDS rounds, server on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU"
for round in $(seq "$ROUNDS"); do
  for t in "${tools[@]}"; do
    case $t in
    wrk) run wrk wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL" ;;
    hey) run hey hey -z "${DURATION}s" -c "$CONNS" "$URL" ;;
    oha) run oha oha -z "${DURATION}s" -c "$CONNS" --no-tui --output-format json "$URL" ;;
    stagegate) run stagegate "$SG" load "$URL" -c "$CONNS" -z "${DURATION}s" --json ;;
    esac
  done
  say "  round $round done"
done

python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, n, rps, cpu = line.split()
    rows.setdefault(name, []).append((int(n), float(rps), float(cpu)))
def med(name):
    rs = rows[name]
    rps = statistics.median(r[1] for r in rs)
    per = statistics.median(r[2] / r[0] * 10000 for r in rs if r[0] > 0)
    return rps, per
w_rps, w_cpu = med("wrk")
print(f"{'tool':<10} {'requests/s':>12} {'vs wrk':>7} {'CPU s/10k req':>14} {'vs wrk':>7}  (median of {len(rows['wrk'])} rounds)")
for name in ["wrk", "stagegate", "oha", "hey"]:
    if name not in rows:
        continue
    rps, per = med(name)
    print(f"{name:<10} {rps:>12.0f} {rps / w_rps:>7.2f} {per:>14.4f} {per / w_cpu:>7.2f}")
print("each round:")
for name, rs in rows.items():
    print(f"  {name:<10} " + "  ".join(f"{r[1]:.0f}/s {r[2] / r[0] * 10000:.4f}" for r in rs))
PY

# --- memory ----------------------------------------------------------------------------
say "memory: $BIG_REQUESTS requests"
taskset -c "$CLIENT_CPU" /usr/bin/time -f '%M %e' -o "$work/time" \
  "$SG" load "$URL" -n "$BIG_REQUESTS" -c "$CONNS" --json >"$work/big.json" 2>/dev/null || true
python3 - "$work/big.json" "$work/time" "$BIG_REQUESTS" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
rss_kb, secs = open(sys.argv[2]).read().split()[-2:]
print(f"memory: {j['summary']['requests']} requests (asked {sys.argv[3]}) in {float(secs):.0f} s: "
      f"peak RSS {int(rss_kb) / 1024:.1f} MiB, latency histogram {j['histogram_bytes'] / 1024:.0f} KiB "
      f"(its size is fixed by its bounds, whatever the count)")
PY

# --- accuracy: a fixed 10 ms delay -----------------------------------------------------
start_target() { # PORT ARGS...: a target server pinned to the server CPU
  local port=$1
  shift
  taskset -c "$SERVER_CPU" "$TARGET" "127.0.0.1:$port" "$@" >/dev/null &
  pids+=($!)
  wait_for "http://127.0.0.1:$port/"
}
start_target $((PORT + 1)) --delay 10
taskset -c "$CLIENT_CPU" "$SG" load "http://127.0.0.1:$((PORT + 1))/" -c 10 -z "${DURATION}s" --json >"$work/delay.json" 2>/dev/null || true
taskset -c "$CLIENT_CPU" wrk -t1 -c10 -d"${DURATION}s" --latency "http://127.0.0.1:$((PORT + 1))/" >"$work/delay.wrk" 2>&1 || true
python3 - "$work/delay.json" "$work/delay.wrk" <<'PY'
import json, re, sys
j = json.load(open(sys.argv[1]))
p50 = j["summary"]["latency"]["p50_ms"]
m = re.search(r"50%\s+([\d.]+)(us|ms|s)", open(sys.argv[2]).read())
scale = {"us": 0.001, "ms": 1, "s": 1000}
wrk = float(m.group(1)) * scale[m.group(2)] if m else float("nan")
print(f"fixed 10 ms delay, 10 users: stagegate p50 {p50:.3f} ms ({(p50 / 10 - 1) * 100:+.1f}% from 10 ms); wrk p50 {wrk:.3f} ms")
PY

# --- coordinated omission: a 1 s freeze --------------------------------------------------
# The freeze starts at the 2,000th request: two seconds into the open-model run.
start_target $((PORT + 2)) --stall "$STALL_MS" --stall-at 2000
taskset -c "$CLIENT_CPU" "$SG" load "http://127.0.0.1:$((PORT + 2))/" -q "$OPEN_RATE" -z "${STALL_RUN}s" --json >"$work/open.json" 2>/dev/null || true
start_target $((PORT + 3)) --stall "$STALL_MS" --stall-at 2000
taskset -c "$CLIENT_CPU" "$SG" load "http://127.0.0.1:$((PORT + 3))/" -c 10 -z "${STALL_RUN}s" --json >"$work/closed.json" 2>/dev/null || true
python3 - "$work/open.json" "$work/closed.json" "$STALL_MS" "$STALL_RUN" "$OPEN_RATE" <<'PY'
import json, sys
o, c = (json.load(open(p)) for p in sys.argv[1:3])
stall, run, rate = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
lo, lc = o["summary"]["latency"], c["summary"]["latency"]
# A request due t ms into the freeze waits stall - t: the top 1% of run*rate requests
# were due in the first run*rate/100 / rate s of it.
theory = stall - run * 1000 / 100
print(f"{stall:.0f} ms freeze, open model {rate:.0f}/s for {run:.0f} s: p99 {lo['p99_ms']:.1f} ms "
      f"(a correct measure gives {theory:.0f} ms), p99.9 {lo['p999_ms']:.1f} ms, max {lo['max_ms']:.1f} ms, "
      f"{o['summary']['requests']} requests, generator valid: {o['generator']['valid']}")
print(f"{stall:.0f} ms freeze, closed model 10 users for {run:.0f} s: p99 {lc['p99_ms']:.3f} ms, "
      f"max {lc['max_ms']:.1f} ms, {c['summary']['requests']} requests: the stall hides in the tail")
PY
