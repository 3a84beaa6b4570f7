#!/usr/bin/env bash
# Bakes (`watch` steps) beside the runbook way of doing them, in one run on this machine.
#
# A real Prometheus (scripts/prometheus.sh, scraping every 1 s) scrapes the staging demo
# service, which stagegate deploys with the local driver from a temporary directory. Then:
#
#   1. CPU and memory: `stagegate deploy` runs a bake of 20 Prometheus measurements every
#      1 s for WINDOW, and at the same time the peer, a bash loop that sends the same 20
#      instant queries every second with `curl -s` (all 20 at once with `&` and `wait`, or
#      one after another with PEER_MODE=sequential), runs for the same time against the same
#      Prometheus. Figures: CPU seconds (user + system) and % of one core over the window,
#      and peak RSS, and the ratios. For stagegate, only the `stagegate deploy` process
#      itself is counted (its /proc/PID/stat and VmHWM), not the detached `__supervise`
#      process that keeps the service running, nor the service: those are printed apart.
#      For the loop, the loop and every curl it ran (getrusage of the waited-for children).
#   2. Stored size: a bake of the same 20 measurements every 100 ms for ROUNDS rounds
#      (ROUNDS x 100 ms: 288 s for 2880, the rounds of a 24-hour bake at 30 s, with room for
#      1% more so that a late round does not leave fewer), in a store of its own; then the
#      count and bytes of its `measurement_round` events (of the first ROUNDS), the database's
#      size when the bake began and after the run, the files' size on disk with the WAL (the
#      largest seen), and bytes per round.
# Each figure is printed beside its target (< 1% of one core, < 20 MB RSS, < 5 MB for 2880
# rounds); nothing fails on a figure.
#
# Usage: bash scripts/bench-bake.sh [--window 10m] [--rounds 2880]
#   It takes WINDOW + ROUNDS/10 s + about a minute (16 minutes with the defaults), plus the
#   release build the first time (some 5 minutes on 2 cores).
# Settings (environment): WINDOW=10m (s, m or h; 0 skips part 1), ROUNDS=2880 (0 skips
#   part 2), PEER_MODE=parallel|sequential. Needs prometheus, curl, python3, cargo.
# The machine is shared and noisy: compare the two only within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WINDOW=${WINDOW:-10m}
ROUNDS=${ROUNDS:-2880}
PEER_MODE=${PEER_MODE:-parallel}
export CI=true

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case $1 in
  --window) [ $# -ge 2 ] || usage; WINDOW=$2; shift 2 ;;
  --window=*) WINDOW=${1#*=}; shift ;;
  --rounds) [ $# -ge 2 ] || usage; ROUNDS=$2; shift 2 ;;
  --rounds=*) ROUNDS=${1#*=}; shift ;;
  -h | --help) usage ;;
  *) say "unknown argument: $1"; usage ;;
  esac
done
# seconds WINDOW: `90`, `90s`, `2m`, `1h` as whole seconds.
seconds() {
  [[ $1 =~ ^([0-9]+)(s|m|h)?$ ]] || die "WINDOW must be whole seconds, minutes or hours (90s, 2m, 1h), not \`$1\`"
  local n=${BASH_REMATCH[1]}
  case ${BASH_REMATCH[2]} in
  m) echo $((n * 60)) ;;
  h) echo $((n * 3600)) ;;
  *) echo "$n" ;;
  esac
}
window_s=$(seconds "$WINDOW")
[[ $ROUNDS =~ ^[0-9]+$ ]] || die "ROUNDS must be a whole number, not \`$ROUNDS\`"
case $PEER_MODE in parallel | sequential) ;; *) die "PEER_MODE is parallel or sequential" ;; esac
[ "$window_s" -gt 0 ] && [ "$window_s" -lt 5 ] && die "a window of less than 5 s measures nothing"

have() { command -v "$1" >/dev/null 2>&1; }
have prometheus || die "prometheus is missing: apt-get install prometheus"
have curl || die "curl is missing: apt-get install curl"
have python3 || die "python3 is missing"

say "building stagegate and staging-demo (release)..."
cargo build --release -q -p stagegate-cli -p staging-demo
SG=$ROOT/target/release/stagegate
DEMO=$ROOT/target/release/staging-demo

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-bake.XXXXXX")
plans=()    # plan files deployed, stopped on exit
pgroups=()  # process groups started (a runner's command and its children)
cleanup() {
  local g f p
  for g in "${pgroups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for g in "${pgroups[@]}"; do
    for _ in $(seq 50); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$g" 2>/dev/null || true
  done
  for f in "${plans[@]}"; do
    "$SG" -f "$f" stop staging </dev/null >/dev/null 2>&1 || true
    # Whatever `stop` could not: the supervisors left (each stops its service on SIGTERM).
    for p in "$(dirname "$f")"/.stagegate/releases/*/*/*/supervisor.pid; do
      if [ -f "$p" ]; then kill -TERM "$(cat "$p")" 2>/dev/null || true; fi
    done
  done
  if [ -f "$work/prom/prometheus.pid" ]; then
    bash scripts/prometheus.sh stop "$work/prom" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- free loopback ports -----------------------------------------------------------------
read -r PROM_PORT PORT_A PORT_B < <(python3 - <<'PY'
import random, socket
ports = []
while len(ports) < 3:
    p = random.randint(20000, 60000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    if p not in ports:
        ports.append(p)
print(*ports)
PY
)

# --- the runner: starts a command, samples it, and records what it used -------------------
# runner.py OUT.json LOG MARKER DBFILE -- CMD...: runs CMD in a session of its own (its pid,
# which is its process group, goes to OUT.json.pid), stdout and stderr to LOG; every 0.25 s
# it reads CMD's own utime + stime (/proc/PID/stat), VmHWM and VmRSS, and the summed RSS
# and PSS of CMD and its live descendants. When MARKER first shows in LOG it notes the time,
# CPU, memory and the size of DBFILE (its file + -wal, and its pages) and touches
# OUT.json.marked; the largest file + -wal seen is kept too. On exit it reads the zombie's own CPU
# once more, then reaps it (getrusage: CMD and the children it waited for).
cat >"$work/runner.py" <<'PY'
import json, os, sqlite3, subprocess, sys, time
out, log, marker, dbfile = sys.argv[1:5]
cmd = sys.argv[6:]
tck = os.sysconf("SC_CLK_TCK")

def own_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / tck  # utime, stime (fields 14, 15)

def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

def smaps_kb(pid, key):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids

def fsize(path):
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

def pages(path):  # the database's logical size, committed WAL frames included
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        n = con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0

logf = open(log, "wb")
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                     start_new_session=True)
with open(out + ".pid", "w") as f:
    f.write(str(p.pid))
t0 = time.monotonic()
hwm = rss = tree_rss = tree_pss = db_max = 0
mark = None
cpu = 0.0
while True:
    if os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
        break
    try:
        cpu = own_cpu(p.pid)
    except OSError:
        pass
    hwm = max(hwm, status_kb(p.pid, "VmHWM"))
    rss = status_kb(p.pid, "VmRSS") or rss
    ps = tree(p.pid)
    tree_rss = max(tree_rss, sum(status_kb(q, "VmRSS") for q in ps))
    if len(ps) > 1:
        tree_pss = max(tree_pss, sum(smaps_kb(q, "Pss") for q in ps))
    if dbfile:
        db_max = max(db_max, fsize(dbfile))
    if marker and mark is None:
        with open(log, "rb") as f:
            found = marker.encode() in f.read()
        if found:
            mark = {"t": time.monotonic() - t0, "cpu": cpu, "hwm_kb": hwm, "rss_kb": rss,
                    "db_bytes": fsize(dbfile) if dbfile else 0, "db_pages_bytes": pages(dbfile) if dbfile else 0}
            open(out + ".marked", "w").close()
    time.sleep(0.25)
t_end = time.monotonic() - t0
try:
    final_cpu = own_cpu(p.pid)  # the zombie still has its times
except OSError:
    final_cpu = cpu
_, status, ru = os.wait4(p.pid, 0)
db_end = fsize(dbfile) if dbfile else 0
db_max = max(db_max, db_end)
res = {
    "wall": t_end,
    "own_cpu": final_cpu,
    "hwm_kb": hwm,
    "last_rss_kb": rss,
    "tree_rss_max_kb": tree_rss,
    "tree_pss_max_kb": tree_pss,
    "ru_cpu": ru.ru_utime + ru.ru_stime,
    "ru_maxrss_kb": ru.ru_maxrss,
    "exit": os.waitstatus_to_exitcode(status),
    "mark": mark,
    "db_bytes_max": db_max,
    "db_bytes_end": db_end,
}
with open(out, "w") as f:
    json.dump(res, f)
PY

# run_bg NAME MARKER DBFILE CMD...: starts the runner in the background (pid in $runner_pid).
run_bg() {
  local name=$1 marker=$2 db=$3
  shift 3
  python3 "$work/runner.py" "$work/$name.json" "$work/$name.log" "$marker" "$db" -- "$@" &
  runner_pid=$!
  for _ in $(seq 100); do [ -s "$work/$name.json.pid" ] && break; sleep 0.05; done
  [ -s "$work/$name.json.pid" ] || die "the runner of $name did not start"
  pgroups+=("$(cat "$work/$name.json.pid")")
}

# --- the measurements ---------------------------------------------------------------------
# NAME|PASS|FAIL|QUERY, SEL standing for the service's job and instance. Every query answers
# a number even without traffic, so no sample is "no data".
measurements=(
  'errors_5xx|< 1||sum(rate(http_requests_total{SEL,status="5xx"}[1m])) or vector(0)'
  'up|>= 1||up{SEL}'
  'hub_up|>= 1||erp_hub_up{SEL}'
  'p95|< 0.5||histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{SEL}[1m])) > 0) or vector(0)'
  'p99|< 1||histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{SEL}[1m])) > 0) or vector(0)'
  'p50|< 0.25||histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket{SEL}[1m])) > 0) or vector(0)'
  'error_ratio|< 0.01|> 0.05|(sum(rate(http_requests_total{SEL,status="5xx"}[1m])) or vector(0)) / clamp_min(sum(rate(http_requests_total{SEL}[1m])), 1e-9)'
  'errors_4xx||> 5|sum(rate(http_requests_total{SEL,status="4xx"}[1m])) or vector(0)'
  'request_rate|>= 0||sum(rate(http_requests_total{SEL}[1m])) or vector(0)'
  'errors_5m|< 10||sum(increase(http_requests_total{SEL,status="5xx"}[5m])) or vector(0)'
  'version|== 1||count(demo_build_info{SEL,version="1.0.0"}) or vector(0)'
  'uptime|> 0||time() - max(process_start_time_seconds{SEL})'
  'restarts|< 1||changes(process_start_time_seconds{SEL}[5m])'
  'scrape_time|< 0.5||scrape_duration_seconds{SEL}'
  'scraped|> 0||scrape_samples_scraped{SEL}'
  'admin_ops|< 100||sum(rate(admin_operations_total{SEL}[1m])) or vector(0)'
  'downloads||> 1000|sum(rate(file_downloads_total{SEL}[1m])) or vector(0)'
  'download_bytes|< 1e9||sum(rate(file_download_bytes_total{SEL}[1m])) or vector(0)'
  'scrape_time_1m|< 0.5||avg_over_time(scrape_duration_seconds{SEL}[1m])'
  'hub_up_min|>= 1||min_over_time(erp_hub_up{SEL}[1m])'
)
sel_of() { printf 'job="demo",instance="127.0.0.1:%s"' "$1"; }

# plan DIR PORT FOR EVERY: a plan deploying the demo on PORT, then baking FOR every EVERY.
# The limits are high so the window always runs to its end; the samples' states are counted
# afterwards.
plan() {
  local dir=$1 port=$2 for=$3 every=$4 sel m name pass fail query
  sel=$(sel_of "$port")
  mkdir -p "$dir"
  cp "$DEMO" "$dir/demo"
  {
    cat <<EOF
# Written by scripts/bench-bake.sh.
project: bake-bench
services:
  api:
    artifacts: [demo]
    start: ./demo
    port: $port
    env: { DEMO_VERSION: "\${{ release.version }}" }
    health: { path: /health, interval: 100ms, timeout: 10s }
environments:
  staging: {}
stages:
  deploy:
    - deploy: api
    # Prometheus scrapes every second: let it see the new release before the bake.
    - run: sleep 3
  bake:
    - id: bake
      watch:
        for: $for
        every: $every
        failure_limit: 1000000
        inconclusive_limit: 1000000
        consecutive_error_limit: 1000000
        measure:
EOF
    for m in "${measurements[@]}"; do
      IFS='|' read -r name pass fail query <<<"$m"
      printf "          - name: %s\n            prometheus: { url: \"http://127.0.0.1:%s\", query: '%s' }\n" \
        "$name" "$PROM_PORT" "${query//SEL/$sel}"
      [ -n "$pass" ] && printf '            pass: "%s"\n' "$pass"
      [ -n "$fail" ] && printf '            fail: "%s"\n' "$fail"
    done
  } >"$dir/stagegate.yml"
  "$SG" -f "$dir/stagegate.yml" validate </dev/null >"$dir/validate.txt" 2>&1 ||
    { cat "$dir/validate.txt" >&2; die "the generated plan $dir/stagegate.yml is not valid"; }
}

# peer.sh URL SECONDS MODE QUERIES OUTDIR: the runbook way, one round of curls a second.
cat >"$work/peer.sh" <<'EOF'
#!/usr/bin/env bash
# The same instant queries every second with curl, for SECONDS: each round starts a
# `sleep 1` with the queries and waits for all of them.
url=$1 secs=$2 mode=$3 out=$5
mapfile -t queries <"$4"
end=$((SECONDS + secs))
rounds=0
while [ "$SECONDS" -lt "$end" ]; do
  sleep 1 &
  for i in "${!queries[@]}"; do
    if [ "$mode" = parallel ]; then
      curl -s --max-time 1 "$url/api/v1/query" --data-urlencode "query=${queries[$i]}" -o "$out/q$i.json" &
    else
      curl -s --max-time 1 "$url/api/v1/query" --data-urlencode "query=${queries[$i]}" -o "$out/q$i.json"
    fi
  done
  wait
  rounds=$((rounds + 1))
done
echo "rounds $rounds"
EOF

say "starting Prometheus on 127.0.0.1:$PROM_PORT (services on $PORT_A and $PORT_B)..."
bash scripts/prometheus.sh start "$work/prom" "$PROM_PORT" "127.0.0.1:$PORT_A" "127.0.0.1:$PORT_B" >&2

supervisor_line=""
if [ "$window_s" -gt 0 ]; then
  plan "$work/a" "$PORT_A" "${window_s}s" 1s
  plans+=("$work/a/stagegate.yml")
  sel=$(sel_of "$PORT_A")
  for m in "${measurements[@]}"; do
    IFS='|' read -r _ _ _ query <<<"$m"
    printf '%s\n' "${query//SEL/$sel}"
  done >"$work/queries.txt"
  mkdir -p "$work/peer-out"

  say "part 1: a ${window_s}s bake of ${#measurements[@]} measurements every 1s, and the curl loop ($PEER_MODE)..."
  run_bg sg "watching " "$work/a/.stagegate/state.db" \
    "$SG" -f "$work/a/stagegate.yml" deploy staging --release-version 1.0.0
  sg_runner=$runner_pid
  # The loop starts when the bake does, so both see the same minutes.
  for _ in $(seq 1200); do
    [ -e "$work/sg.json.marked" ] || [ -s "$work/sg.json" ] && break
    sleep 0.1
  done
  [ -e "$work/sg.json.marked" ] || { cat "$work/sg.log" >&2; die "the bake did not start"; }
  run_bg peer "" "" bash "$work/peer.sh" "http://127.0.0.1:$PROM_PORT" "$window_s" "$PEER_MODE" \
    "$work/queries.txt" "$work/peer-out"
  wait "$runner_pid"
  wait "$sg_runner"
  [ -s "$work/sg.json" ] || die "the runner of the deploy failed"
  [ -s "$work/peer.json" ] || die "the runner of the curl loop failed"
  pgroups=() # both ended: their ids are free again
  # The supervisor and the service outlive the deploy: sampled before the stop.
  for f in "$work"/a/.stagegate/releases/staging/api/*/supervisor.pid; do
    [ -f "$f" ] || continue
    sp=$(cat "$f")
    svc=$(cat "$(dirname "$f")/service.pid" 2>/dev/null || echo 0)
    supervisor_line=$(python3 - "$sp" "$svc" <<'PY'
import os, sys
tck = os.sysconf("SC_CLK_TCK")
def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids
def st(pid):  # CPU seconds, VmHWM in MB, seconds alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return (int(rest[11]) + int(rest[12])) / tck, hwm / 1024, up - int(rest[19]) / tck
    except (OSError, StopIteration, IndexError, ValueError):
        return None
parts = []
s = st(int(sys.argv[1]))
if s:
    parts.append(f"the __supervise process: peak RSS {s[1]:.1f} MB, {s[0]:.2f} s CPU in {s[2]:.0f} s ({s[0] / s[2] * 100:.3f}% of a core)")
d = [x for x in map(st, tree(int(sys.argv[2]))) if x] if sys.argv[2] != "0" else []
if d:
    parts.append(f"the demo service ({len(d)} process{'es' if len(d) > 1 else ''}): peak RSS "
                 f"{sum(x[1] for x in d):.1f} MB, {sum(x[0] for x in d):.2f} s CPU in {d[0][2]:.0f} s")
print("; ".join(parts) or "the supervisor was gone")
PY
)
  done
  "$SG" -f "$work/a/stagegate.yml" stop staging </dev/null >"$work/a/stop.txt" 2>&1 || say "note: stop staging (part 1) failed: $(tail -1 "$work/a/stop.txt")"
fi

if [ "$ROUNDS" -gt 0 ]; then
  # Room for a few more rounds than ROUNDS, so that a round late on a busy machine does not
  # leave fewer: the figures are of the first ROUNDS, the database holds them all.
  spare=$((ROUNDS / 100 > 10 ? ROUNDS / 100 : 10))
  plan "$work/b" "$PORT_B" "$(((ROUNDS + spare) * 100))ms" 100ms
  plans+=("$work/b/stagegate.yml")
  say "part 2: a bake of $ROUNDS (+ up to $spare) rounds every 100ms ($(((ROUNDS + spare) / 10)) s), stored..."
  run_bg store "watching " "$work/b/.stagegate/state.db" \
    "$SG" -f "$work/b/stagegate.yml" deploy staging --release-version 1.0.0
  wait "$runner_pid"
  [ -s "$work/store.json" ] || die "the runner of part 2 failed"
  pgroups=()
  "$SG" -f "$work/b/stagegate.yml" stop staging </dev/null >"$work/b/stop.txt" 2>&1 || say "note: stop staging (part 2) failed: $(tail -1 "$work/b/stop.txt")"
fi
bash scripts/prometheus.sh stop "$work/prom" >/dev/null

# --- the figures ----------------------------------------------------------------------------
names=()
for m in "${measurements[@]}"; do names+=("${m%%|*}"); done
echo "stagegate bake benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:   nproc $(nproc), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tools:     $("$SG" --version), $(prometheus --version 2>&1 | head -1 | cut -d' ' -f1-3), $(curl --version | head -1 | cut -d' ' -f1-2), bash $BASH_VERSION"
python3 - "$work" "$window_s" "$ROUNDS" "$PEER_MODE" "$supervisor_line" "${names[@]}" <<'PY'
import json, os, shutil, sqlite3, sys
work, window, rounds_asked, mode, sup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
names = sys.argv[6:]
MB = 1e6

def load(name):
    p = os.path.join(work, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None

def holds(ok):
    return "holds" if ok else "DOES NOT HOLD"

def store(db, first=-1):
    """The rounds (the first FIRST), their states, and the database's size (a checkpointed copy's pages)."""
    copy = os.path.join(work, "copy.db")
    for suffix in ("", "-wal"):
        if os.path.exists(db + suffix):
            shutil.copyfile(db + suffix, copy + suffix)
    con = sqlite3.connect(copy)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rounds = "SELECT data FROM events WHERE kind='measurement_round' ORDER BY deployment_id, seq LIMIT ?"
    n, size = con.execute(f"SELECT count(*), coalesce(sum(length(data)), 0) FROM ({rounds})", (first,)).fetchone()
    states, odd = {}, {}
    for (data,) in con.execute(rounds, (first,)):
        for i, smp in enumerate(json.loads(data)["samples"]):
            states[smp["state"]] = states.get(smp["state"], 0) + 1
            if smp["state"] != "pass":
                name = names[i] if i < len(names) else str(i)
                odd.setdefault(name, [0, smp.get("detail", "")])[0] += 1
    outcome = con.execute("SELECT outcome FROM deployments ORDER BY id DESC LIMIT 1").fetchone()
    page = con.execute("PRAGMA page_size").fetchone()[0]
    info = {
        "all_rounds": con.execute("SELECT count(*) FROM events WHERE kind='measurement_round'").fetchone()[0],
        "rounds": n, "bytes": size, "outcome": outcome[0] if outcome else "?",
        "states": ", ".join(f"{k} {v}" for k, v in sorted(states.items())),
        "odd": "; ".join(f"{k} {c}x, e.g. {d}" for k, (c, d) in odd.items()),
        "pages": con.execute("PRAGMA page_count").fetchone()[0] * page,
        "events": con.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM events").fetchone(),
    }
    try:
        by = con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 3").fetchall()
        info["largest"] = ", ".join(f"{k} {v / MB:.2f} MB" for k, v in by)
    except sqlite3.Error:
        info["largest"] = "(this sqlite has no dbstat)"
    con.close()
    return info

sg, peer = load("sg"), load("peer")
if window and sg and peer:
    m = sg["mark"]
    bake_wall, bake_cpu = sg["wall"] - m["t"], sg["own_cpu"] - m["cpu"]
    a = store(os.path.join(work, "a/.stagegate/state.db"))
    peer_rounds = open(os.path.join(work, "peer.log")).read().split()[-1]
    rows = [("stagegate", bake_cpu, bake_wall, sg["hwm_kb"] / 1024),
            ("curl loop", peer["ru_cpu"], peer["wall"], peer["ru_maxrss_kb"] / 1024)]
    pct = [r[1] / r[2] * 100 for r in rows]
    print()
    print(f"1. a {window} s bake of {len(names)} Prometheus instant queries every 1 s: stagegate took "
          f"{a['rounds']} rounds, the curl loop ({mode}) {peer_rounds}, at the same time, against the same Prometheus")
    per = [rows[0][1] / max(a["rounds"], 1) * 1000, rows[1][1] / max(int(peer_rounds), 1) * 1000]
    print(f"{'':<12} {'CPU s':>8} {'wall s':>8} {'% of a core':>12} {'CPU ms/round':>13} {'peak RSS MB':>12}")
    for (name, cpu, wall, rss), p, r in zip(rows, pct, per):
        print(f"{name:<12} {cpu:>8.2f} {wall:>8.1f} {p:>12.3f} {r:>13.2f} {rss:>12.1f}")
    ratio = lambda x, y: f"{x / y:.1f}x" if y else "inf"
    print(f"{'loop / sg':<12} {ratio(rows[1][1], rows[0][1]):>8} {'':>8} {ratio(pct[1], pct[0]):>12} "
          f"{ratio(per[1], per[0]):>13} {rows[1][3] / rows[0][3]:>11.2f}x")
    print(f"stagegate: the `stagegate deploy` process alone (/proc/PID/stat, VmHWM), from the watch's first "
          f"line to its exit; RSS {m['rss_kb'] / 1024:.1f} MB when the bake began (peak so far "
          f"{m['hwm_kb'] / 1024:.1f}), {sg['last_rss_kb'] / 1024:.1f} MB at the end; the whole run, deploy "
          f"step included: {sg['own_cpu']:.2f} s CPU in {sg['wall']:.1f} s, exit {sg['exit']}, {a['outcome']}")
    print(f"curl loop: bash and every curl it waited for (getrusage); peak RSS is the largest single process; "
          f"bash and its live curls together, sampled every 0.25 s: up to {peer['tree_rss_max_kb'] / 1024:.1f} MB "
          f"RSS, {peer['tree_pss_max_kb'] / 1024:.1f} MB PSS")
    print(f"apart: {sup}")
    print(f"samples: {a['states']}" + (f" (not passing: {a['odd']})" if a["odd"] else ""))
    print(f"target < 1% of one core: {holds(pct[0] < 1)} ({pct[0]:.3f}%); "
          f"target < 20 MB RSS: {holds(rows[0][3] < 20)} ({rows[0][3]:.1f} MB)")

st = load("store")
if rounds_asked and st:
    db = os.path.join(work, "b/.stagegate/state.db")
    b = store(db, rounds_asked)
    n = b["rounds"]
    start_pages = st["mark"]["db_pages_bytes"] if st["mark"] else 0
    start_files = st["mark"]["db_bytes"] if st["mark"] else 0
    grew = b["pages"] - start_pages
    print()
    print(f"2. stored size: {len(names)} measurements every 100 ms for {rounds_asked} rounds"
          f"{' (as many as a 24-hour bake at 30 s)' if rounds_asked == 2880 else ''}, in a store of its own: {st['wall']:.0f} s, {b['outcome']}")
    na = b["all_rounds"]
    print(f"measurement_round events: {na} in the window; the first {n}: data {b['bytes']} bytes "
          f"({b['bytes'] / MB:.2f} MB), {b['bytes'] / max(n, 1):.0f} bytes per round")
    print(f"database (all {na} rounds): {start_pages} bytes when the bake began, {b['pages']} after the run: "
          f"grew {grew} bytes ({grew / MB:.2f} MB, {grew / max(na, 1):.0f} per round); largest: {b['largest']}")
    print(f"on disk (state.db + state.db-wal): {start_files} bytes when the bake began, at most "
          f"{st['db_bytes_max']} during the run (sampled every 0.25 s), {st['db_bytes_end']} when the deploy exited")
    print(f"all events of the deployment: {b['events'][0]}, {b['events'][1]} bytes of data")
    print(f"samples: {b['states']}" + (f" (not passing: {b['odd']})" if b["odd"] else ""))
    if n < rounds_asked:
        print(f"note: only {n} of {rounds_asked} rounds fitted in the window (rounds ran late): the figures are for {n}")
    print(f"target {rounds_asked} rounds stored in < 5 MB: {holds(n >= rounds_asked and b['pages'] < 5 * MB)} "
          f"(the database with {na} rounds {b['pages'] / MB:.2f} MB, the first {n} rounds' data {b['bytes'] / MB:.2f} MB); "
          f"on disk with the WAL: at most {st['db_bytes_max'] / MB:.2f} MB during the run, {st['db_bytes_end'] / MB:.2f} MB at the end")
PY
