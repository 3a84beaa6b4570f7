#!/usr/bin/env bash
# Benchmarks of stagegate: prints figures, asserts nothing about timings.
#
#   bash scripts/bench.sh
#
# 1. `validate` on a generated plan of 500 services and 5,000 steps (20 runs: min, median).
# 2. Engine overhead per step: `deploy` of 200 x `run: "true"` against 200 x `sh -c true`.
# 3. Rollback: from the failed health check of the quickstart's broken release to the end of
#    the rollback step that puts the previous release back (3 runs).
#
# 1 uses hyperfine when it is installed (BENCH_NO_HYPERFINE=1 to skip it), else a python3
# timing loop; 2 times its three commands in interleaved rounds (python3).
# BENCH_VALIDATE_RUNS, BENCH_ENGINE_RUNS and BENCH_ROLLBACK_RUNS change the number of runs
# (defaults 20, 5, 3). Needs cargo, rustc, python3 and awk.
#
# Works in a temporary directory that it deletes at the end. Exits 0 unless something
# crashes (a build error, an invalid generated plan, an unexpected exit code).
# See docs/benchmarks.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPERS="$ROOT/scripts/bench_helpers.py"
cd "$ROOT"

VALIDATE_SERVICES=500
VALIDATE_STEPS=5000
VALIDATE_RUNS="${BENCH_VALIDATE_RUNS:-20}"
ENGINE_STEPS=200
ENGINE_RUNS="${BENCH_ENGINE_RUNS:-5}"
ROLLBACK_RUNS="${BENCH_ROLLBACK_RUNS:-3}"

echo "building: cargo build --release -p stagegate-cli -p quickstart-demo" >&2
cargo build --release -p stagegate-cli -p quickstart-demo >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/stagegate-bench.XXXXXX")"
SG="$TMP/bin/stagegate"
ROLLBACK_PLAN="$TMP/rollback/stagegate.yml"
cleanup() {
  # Stop the rollback benchmark's service if it got that far, then delete everything.
  if [ -f "$ROLLBACK_PLAN" ]; then
    "$SG" -f "$ROLLBACK_PLAN" --state "$TMP/rollback/state.db" --color never stop bench \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
# Copies of the binaries: others may rebuild the target directory while this runs.
mkdir -p "$TMP/bin"
cp "$TARGET_DIR/release/stagegate" "$TARGET_DIR/release/quickstart-demo" "$TMP/bin/"
DEMO="$TMP/bin/quickstart-demo"

HYPERFINE=""
if [ -z "${BENCH_NO_HYPERFINE:-}" ] && command -v hyperfine >/dev/null 2>&1; then
  HYPERFINE="$(command -v hyperfine)"
fi

# time_runs RUNS CMD [ARG...]: (section 1) runs CMD RUNS times after one warm-up run (output
# discarded; a failing run is fatal) and prints "MIN MEDIAN" in milliseconds.
time_runs() {
  local runs=$1
  shift
  if [ -n "$HYPERFINE" ]; then
    local cmd
    cmd="$(printf '%q ' "$@")"
    "$HYPERFINE" -N --style none --warmup 1 --runs "$runs" \
      --export-json "$TMP/hyperfine.json" "$cmd" >/dev/null
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print("%.1f %.1f" % (r["min"] * 1000, r["median"] * 1000))' "$TMP/hyperfine.json"
  else
    python3 "$HELPERS" time "$runs" "$@"
  fi
}

# ratio A B: A / B with two decimals. per_step TOTAL BASE N: (TOTAL - BASE) / N, two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'; }
per_step() { awk -v t="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.2f\n", (t - b) / n }'; }

echo "stagegate benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:   nproc $(nproc), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || echo 'cpu unknown')"
echo "stagegate: $("$SG" --version) (a copy of $TARGET_DIR/release/stagegate, built $(date -u -r "$TARGET_DIR/release/stagegate" '+%Y-%m-%d %H:%M UTC'))"
if [ -n "$HYPERFINE" ]; then
  echo "timer:     1: $("$HYPERFINE" --version) (-N, 1 warm-up run); 2: python3 interleaved rounds (1 warm-up round)"
else
  echo "timer:     1: python3 subprocess + time.perf_counter (1 warm-up run); 2: python3 interleaved rounds (1 warm-up round)"
fi

# --- 1. validate --------------------------------------------------------------------------
echo
echo "== 1. stagegate validate: $VALIDATE_SERVICES services, $VALIDATE_STEPS steps"
mkdir -p "$TMP/validate" "$TMP/small"
BIG="$TMP/validate/stagegate.yml"
python3 "$HELPERS" big-plan "$BIG" "$VALIDATE_SERVICES" "$VALIDATE_STEPS"
# The baseline: the same command on a one-step plan (process start, argument parsing, output).
printf '%s\n' 'project: small' 'environments:' '  staging: {}' 'stages:' '  build:' \
  '    - run: echo "hello ${{ release.version }}"' >"$TMP/small/stagegate.yml"
for plan in "$BIG" "$TMP/small/stagegate.yml"; do
  set +e
  out="$("$SG" -f "$plan" --color never validate 2>&1)"
  code=$?
  set -e
  if [ "$code" -ne 0 ]; then
    echo "error: the generated plan $plan is invalid (stagegate validate exited with $code):" >&2
    echo "$out" | head -50 >&2
    exit 1
  fi
done
echo "plan: $(wc -c <"$BIG" | tr -d ' ') bytes, $(wc -l <"$BIG" | tr -d ' ') lines; $VALIDATE_RUNS runs each"
res="$(time_runs "$VALIDATE_RUNS" "$SG" -f "$BIG" --color never validate)"
read -r big_min big_med <<<"$res"
res="$(time_runs "$VALIDATE_RUNS" "$SG" -f "$TMP/small/stagegate.yml" --color never validate)"
read -r small_min small_med <<<"$res"
printf '  %-44s %10s %10s\n' "" "min ms" "median ms"
printf '  %-44s %10s %10s\n' "validate, $VALIDATE_SERVICES services / $VALIDATE_STEPS steps" "$big_min" "$big_med"
printf '  %-44s %10s %10s\n' "baseline: validate, 1 step" "$small_min" "$small_med"
printf '  %-44s %10s %10s\n' "ratio" "$(ratio "$big_min" "$small_min")" "$(ratio "$big_med" "$small_med")"
printf '  median vs goal (< 100 ms): %s ms = %sx the goal\n' "$big_med" "$(ratio "$big_med" 100)"

# --- 2. engine overhead per step ------------------------------------------------------------
echo
echo "== 2. engine overhead per step: deploy of $ENGINE_STEPS x run: \"true\", median of $ENGINE_RUNS interleaved runs"
mkdir -p "$TMP/engine"
STEPS_PLAN="$TMP/engine/stagegate.yml"
python3 "$HELPERS" steps-plan "$STEPS_PLAN" "$ENGINE_STEPS"
# One deploy to check it works (it also creates the state store).
if ! "$SG" -f "$STEPS_PLAN" --color never deploy bench --state "$TMP/engine/state.db" \
  --release-version 1 >"$TMP/engine/first.log" 2>&1; then
  echo "error: stagegate deploy of $STEPS_PLAN failed:" >&2
  tail -30 "$TMP/engine/first.log" >&2
  exit 1
fi
# A second baseline: the same spawns made the way stagegate makes them (bash forks itself for
# each one; Rust's std::process::Command uses posix_spawn or vfork).
rustc --edition 2021 -O -o "$TMP/spawn_loop" "$ROOT/scripts/spawn_loop.rs"
# Interleaved (stagegate, bash loop, Rust loop; again): on a busy machine the load drifts, and
# timing each command in its own block would charge the drift to one of them.
res="$(python3 "$HELPERS" interleaved "$ENGINE_RUNS" \
  "$SG" -f "$STEPS_PLAN" --color never deploy bench --state "$TMP/engine/state.db" --release-version 1 \
  :: bash -c "for ((i = 0; i < $ENGINE_STEPS; i++)); do sh -c true; done" \
  :: "$TMP/spawn_loop" "$ENGINE_STEPS")"
read -r sg_med sh_med rs_med <<<"$res"
printf '  %-50s %10s %8s %18s\n' "" "median ms" "ratio" "overhead/step ms"
printf '  %-50s %10s\n' "stagegate deploy, $ENGINE_STEPS steps" "$sg_med"
printf '  %-50s %10s %8s %18s\n' "baseline: bash loop, $ENGINE_STEPS x sh -c true" "$sh_med" \
  "$(ratio "$sg_med" "$sh_med")" "$(per_step "$sg_med" "$sh_med" "$ENGINE_STEPS")"
printf '  %-50s %10s %8s %18s\n' "baseline 2: Rust loop, $ENGINE_STEPS x sh -c true" "$rs_med" \
  "$(ratio "$sg_med" "$rs_med")" "$(per_step "$sg_med" "$rs_med" "$ENGINE_STEPS")"
printf '  engine overhead per step (ms): %s (vs the bash loop), %s (vs the Rust loop); goal < 2 ms\n' \
  "$(per_step "$sg_med" "$sh_med" "$ENGINE_STEPS")" "$(per_step "$sg_med" "$rs_med" "$ENGINE_STEPS")"
echo "  (overhead = (stagegate - baseline) / $ENGINE_STEPS: recording each step and event to SQLite,"
echo "  the per-step log and outputs files, and the deploy's start-up cost spread over the steps)"

# --- 3. rollback ------------------------------------------------------------------------------
echo
echo "== 3. rollback: failed health check of the broken release -> previous release healthy again"
mkdir -p "$TMP/rollback"
cp "$DEMO" "$TMP/rollback/quickstart-demo"
# The quickstart's service, without its build (the artifact is the release-built demo).
cat >"$ROLLBACK_PLAN" <<'EOF'
project: rollback-bench

release:
  version: "1.0.0"

vars:
  break: ""

environments:
  bench: {}

services:
  web:
    driver: local
    artifacts: [quickstart-demo]
    start: ./quickstart-demo
    env:
      DEMO_VERSION: "${{ release.version }}"
      DEMO_BREAK: "${{ vars.break }}"
    port: auto
    keep: 3
    health:
      path: /health
      expect:
        status: 200
        json: { "$.version": "${{ release.version }}" }
      interval: 100ms
      timeout: 3s

stages:
  deploy:
    - deploy: web
EOF
rb() { "$SG" -f "$ROLLBACK_PLAN" --state "$TMP/rollback/state.db" --color never "$@"; }
printf '  %-8s %26s %26s\n' "run" "deploy step (to failure) ms" "failure -> restored ms"
for i in $(seq 1 "$ROLLBACK_RUNS"); do
  if ! rb deploy bench --release-version 1.0.0 >"$TMP/rollback/good-$i.log" 2>&1; then
    echo "error: deploying the good release failed:" >&2
    tail -30 "$TMP/rollback/good-$i.log" >&2
    exit 1
  fi
  events="$TMP/rollback/events-$i.jsonl"
  set +e
  rb deploy bench --release-version 1.1.0 --var break=health --events "$events" \
    >"$TMP/rollback/broken-$i.log" 2>&1
  code=$?
  set -e
  if [ "$code" -ne 4 ]; then
    echo "error: the broken release's deploy exited with $code, expected 4 (rolled back):" >&2
    tail -30 "$TMP/rollback/broken-$i.log" >&2
    exit 1
  fi
  deploy_ms="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("event") == "step_finished" and e["step"]["kind"] == "deploy":
        print(e["duration_ms"])' "$events")"
  gap_ms="$(python3 "$HELPERS" rollback-gap "$events" web)"
  printf '  %-8s %26s %26s\n' "$i" "$deploy_ms" "$gap_ms"
done
echo "  goal: failure -> restored < 1000 ms (the deploy step includes the 3 s health timeout)"
rb stop bench >/dev/null 2>&1

# --- 4. against an earlier build (BENCH_BASELINE=DIR) --------------------------------------
# DIR holds a `stagegate` built from an earlier commit (e.g. `git worktree add` of that commit
# and `cargo build --release -p stagegate-cli`, then copy the binary). Sections 1 and 2's
# commands run with both binaries in interleaved rounds, so the machine's load drifts alike.
if [ -n "${BENCH_BASELINE:-}" ]; then
  BASE="$TMP/bin/stagegate-baseline"
  cp "$BENCH_BASELINE/stagegate" "$BASE"
  echo
  echo "== 4. this build against the baseline $("$BASE" --version) ($BENCH_BASELINE/stagegate)"
  res="$(python3 "$HELPERS" interleaved "$VALIDATE_RUNS" \
    "$SG" -f "$BIG" --color never validate :: "$BASE" -f "$BIG" --color never validate)"
  read -r new_val old_val <<<"$res"
  "$BASE" -f "$STEPS_PLAN" --color never deploy bench --state "$TMP/engine/base.db" \
    --release-version 1 >/dev/null 2>&1
  res="$(python3 "$HELPERS" interleaved "$ENGINE_RUNS" \
    "$SG" -f "$STEPS_PLAN" --color never deploy bench --state "$TMP/engine/state.db" --release-version 1 \
    :: "$BASE" -f "$STEPS_PLAN" --color never deploy bench --state "$TMP/engine/base.db" --release-version 1 \
    :: bash -c "for ((i = 0; i < $ENGINE_STEPS; i++)); do sh -c true; done")"
  read -r new_dep old_dep sh_dep <<<"$res"
  printf '  %-44s %12s %12s %8s\n' "median ms" "this build" "baseline" "ratio"
  printf '  %-44s %12s %12s %8s\n' "validate, $VALIDATE_SERVICES services / $VALIDATE_STEPS steps" \
    "$new_val" "$old_val" "$(ratio "$new_val" "$old_val")"
  printf '  %-44s %12s %12s %8s\n' "deploy, $ENGINE_STEPS x run: true" "$new_dep" "$old_dep" \
    "$(ratio "$new_dep" "$old_dep")"
  printf '  %-44s %12s %12s\n' "overhead per step ms (vs the bash loop)" \
    "$(per_step "$new_dep" "$sh_dep" "$ENGINE_STEPS")" "$(per_step "$old_dep" "$sh_dep" "$ENGINE_STEPS")"
fi
