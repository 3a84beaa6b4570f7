#!/usr/bin/env bash
# The server's two performance figures (issue: history of 10,000 deployments under 100 ms of
# server time; 100 live viewers of one run under 5% of a core):
#
#   bash scripts/bench-server.sh            # uses target/release if built, else target/debug
#
# 1. Fills a SQLite store with 10,000 deployments (sqlite3), serves it, and times
#    `GET /api/deployments` (the page's history, 50 a page) on loopback: first page and the
#    last, median and max of 30 requests each, as curl measures from request to last byte;
#    then one deployment's view (its steps, events, approvals, audit trail and charts) and
#    /metrics, with 5 steps, 12 events and 7 audit records per deployment.
# 2. Runs a deploy of 20 one-second steps and opens 100 server-sent-event viewers of it;
#    prints the server's CPU time over 10 s with 0 viewers and with 100, as % of one core.
# Needs curl and sqlite3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p stagegate-cli ${PROFILE:+--profile "$PROFILE"}
SG=target/${PROFILE:-debug}/stagegate
[ "${PROFILE:-}" = "" ] && [ -x target/release/stagegate ] && [ target/release/stagegate -nt crates/stagegate-cli/src/serve/mod.rs ] && SG=target/release/stagegate
echo "binary: $SG"

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/stagegate.yml" <<'EOF'
project: bench
environments:
  staging: {}
stages:
  slow:
    - { id: s1, run: sleep 1 }
    - { id: s2, run: sleep 1 }
    - { id: s3, run: sleep 1 }
    - { id: s4, run: sleep 1 }
    - { id: s5, run: sleep 1 }
    - { id: s6, run: sleep 1 }
    - { id: s7, run: sleep 1 }
    - { id: s8, run: sleep 1 }
    - { id: s9, run: sleep 1 }
    - { id: s10, run: sleep 1 }
    - { id: s11, run: sleep 1 }
    - { id: s12, run: sleep 1 }
    - { id: s13, run: sleep 1 }
    - { id: s14, run: sleep 1 }
    - { id: s15, run: sleep 1 }
    - { id: s16, run: sleep 1 }
    - { id: s17, run: sleep 1 }
    - { id: s18, run: sleep 1 }
    - { id: s19, run: sleep 1 }
    - { id: s20, run: sleep 1 }
EOF
sg() { STAGEGATE_ACTOR=bench "$SG" -f "$work/stagegate.yml" --color never "$@"; }

# A store with its schema (one validate-free command opens it), then 10,000 rows.
sg history >/dev/null
db="$work/.stagegate/state.db"
sqlite3 "$db" <<'EOF'
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
INSERT INTO deployments (project, environment, kind, release_version, release_sha, plan_hash,
  actor, pid, host, started_at, finished_at, outcome, exit_code, summary)
SELECT 'bench', CASE i % 3 WHEN 0 THEN 'production' ELSE 'staging' END, 'deploy',
  '1.' || (i / 100) || '.' || (i % 100), printf('%040x', i), 'h', 'bench', 1, 'host',
  1700000000000 + i * 60000, 1700000000000 + i * 60000 + 4200,
  CASE WHEN i % 17 = 0 THEN 'rolled_back' ELSE 'succeeded' END, 0, 'ok'
FROM n;
EOF
# Each with 5 steps, 12 events and 7 audit records, as a short deploy has (the deployment
# view reads them; /metrics counts the steps).
sqlite3 "$db" <<'EOF'
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 12)
INSERT INTO events (deployment_id, seq, at, kind, data)
SELECT d.id, k.i, d.started_at + k.i * 300, 'step_progress',
  '{"event":"step_progress","message":"round ' || k.i || '","step":{"id":"s1"}}'
FROM deployments d, k;
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 5)
INSERT INTO step_runs (deployment_id, seq, phase, stage, step_id, name, kind, status,
  started_at, finished_at, duration_ms, exit_code, attempts, output_tail, outputs, details)
SELECT d.id, k.i, 'run', 'deploy', 's' || k.i, 'step ' || k.i, 'run', 'passed',
  d.started_at + k.i * 800, d.started_at + k.i * 800 + 750, 750 + k.i, 0, 1, 'ok', '{}', '{}'
FROM deployments d, k;
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 7)
INSERT INTO audit_log (seq, at, kind, deployment_id, data, prev_hash, hash)
SELECT 1000 + (d.id - 1) * 7 + k.i, d.started_at + k.i,
  CASE k.i WHEN 1 THEN 'deployment_begun' WHEN 7 THEN 'deployment_finished' ELSE 'step_finished' END,
  d.id, '{}', printf('%064x', (d.id - 1) * 7 + k.i - 1), printf('%064x', (d.id - 1) * 7 + k.i)
FROM deployments d, k;
EOF
echo "deployments in the store: $(sqlite3 "$db" 'SELECT count(*) FROM deployments'), steps: $(sqlite3 "$db" 'SELECT count(*) FROM step_runs'), events: $(sqlite3 "$db" 'SELECT count(*) FROM events'), audit records: $(sqlite3 "$db" 'SELECT count(*) FROM audit_log')"
tok=$(sg token create bench --subject bench --scope read 2>/dev/null)

port=18471
STAGEGATE_ACTOR=bench "$SG" -f "$work/stagegate.yml" serve --listen 127.0.0.1:$port 2>"$work/serve.log" &
srv=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

timeit() { # median and max, in ms, of 30 requests of $1
  for _ in $(seq 30); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $tok" "http://127.0.0.1:$port$1"
  done | sort -n | awk '{a[NR]=$1*1000} END {printf "median %.1f ms, max %.1f ms\n", a[int((NR+1)/2)], a[NR]}'
}
echo "history, first page (50 of 10,000):   $(timeit '/api/deployments?limit=50&page=0')"
echo "history, page 100 (rows 5,001-5,050):  $(timeit '/api/deployments?limit=50&page=100')"
echo "history, last page (page 199):         $(timeit '/api/deployments?limit=50&page=199')"
echo "one environment, first page:           $(timeit '/api/deployments?env=production&limit=50')"
echo "one deployment's view (#5000):         $(timeit '/api/deployments/5000')"
echo "/metrics (50,000 steps in its histogram): $(timeit '/metrics')"

cpu() { awk '{print $14 + $15}' "/proc/$srv/stat"; }
hz=$(getconf CLK_TCK)
window=10

sg deploy staging --release-version 9.9.9 >/dev/null 2>&1 &
dep=$!
sleep 1.5
id=$(sqlite3 "$db" "SELECT max(id) FROM deployments")
a=$(cpu); sleep $window; b=$(cpu)
idle=$(awk -v t=$((b - a)) -v hz="$hz" -v w=$window 'BEGIN {printf "%.2f%% of a core (%d ms of CPU)", 100 * t / hz / w, 1000 * t / hz}')
wait $dep

sg deploy staging --release-version 9.9.10 >/dev/null 2>&1 &
dep=$!
sleep 1.5
id=$(sqlite3 "$db" "SELECT max(id) FROM deployments")
for i in $(seq 100); do
  curl -s -N -H "Authorization: Bearer $tok" "http://127.0.0.1:$port/api/deployments/$id/events" >"$work/viewer.$i" &
done
sleep 1
a=$(cpu); sleep $window; b=$(cpu)
busy=$(awk -v t=$((b - a)) -v hz="$hz" -v w=$window 'BEGIN {printf "%.2f%% of a core (%d ms of CPU)", 100 * t / hz / w, 1000 * t / hz}')
wait $dep
sleep 1
got=$(grep -l 'event: end' "$work"/viewer.* | wc -l)
events=$(grep -c '^event: event' "$work/viewer.1" || true)
echo "one run of 20 steps, server CPU over ${window}s: 0 viewers ${idle}; 100 viewers ${busy} (1 tick = $((1000 / hz)) ms)"
echo "viewers that saw the run end: $got of 100 (each got $events events)"
