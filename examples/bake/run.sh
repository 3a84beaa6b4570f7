#!/usr/bin/env bash
# Seeds 000, 001 and 002's monitoring as a bake against the staging demo and a real
# Prometheus (started here on loopback, scraping every second):
#   1. 1.0.0 bakes clean: every measurement passes (exit 0);
#   2. 1.1.0's health flaps: the bake fails and 1.0.0 serves again (exit 4);
#   3. 1.2.0 answers 500 after 5 s, a slow degradation: the error rate fails, sustained (exit 4);
#   4. 1.3.0 stops exporting metrics: no data, the bake is inconclusive and the deploy ends
#      as awaiting a decision (exit 7); a new deploy is refused until `stagegate decide`
#      rolls it back;
#   5. Prometheus goes down in the middle of 1.4.0's bake: too many errors in a row, rolled back (exit 4).
# Takes about 90 s. Run from anywhere: bash examples/bake/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build staging-demo
command -v prometheus >/dev/null || { echo "needs prometheus: apt-get install prometheus" >&2; exit 1; }

# The service's fixed port (in the plan) and Prometheus's; both free on loopback.
prom_dir=$(mktemp -d)
export PROMETHEUS_URL=http://127.0.0.1:19190
export PROM_TOKEN="${PROM_TOKEN:-bake-demo-token}"
sg_plan examples/bake/stagegate.yml
stop_on_exit staging
# Stop Prometheus too, keeping the script's exit code for _sg_stop_all.
trap 'code=$?; bash scripts/prometheus.sh stop "$prom_dir" >/dev/null 2>&1 || true; (exit $code); _sg_stop_all' EXIT
bash scripts/prometheus.sh start "$prom_dir" 19190 127.0.0.1:18180

echo "### 1. deploy 1.0.0: it bakes clean"
sg deploy staging --release-version 1.0.0

echo
echo "### 2. deploy 1.1.0, whose health flaps: the bake fails, 1.0.0 serves again (exit code 4)"
expect_code 4 sg deploy staging --release-version 1.1.0 --var fault=flap --var fault_after_ms=1500

echo
echo "### 3. deploy 1.2.0, which answers 500 from 5 s on: the error rate fails once sustained (exit code 4)"
expect_code 4 sg deploy staging --release-version 1.2.0 --var fault=errors-after

echo
echo "### 4. deploy 1.3.0, which stops exporting metrics: no data, awaiting a decision (exit code 7)"
expect_code 7 sg deploy staging --release-version 1.3.0 --var fault=metrics-stop-after --var fault_after_ms=4000
id=$(last_id staging)
echo "--- a new deploy waits for the decision (exit code 7, nothing runs):"
expect_code 7 sg deploy staging --release-version 1.4.0
echo "--- decide: fail it, which rolls it back"
sg decide "$id" --fail --reason "no metrics from 1.3.0: cannot judge it" --as ci

echo
echo "### 5. deploy 1.4.0 and stop Prometheus mid-bake: the source fails 5 times in a row (exit code 4)"
# Prometheus stops once the bake has taken two rounds (its events say so).
events=$(mktemp)
(
  for _ in $(seq 600); do
    [ "$(grep -c '"measurement_round"' "$events" 2>/dev/null || true)" -ge 2 ] && break
    sleep 0.1
  done
  bash scripts/prometheus.sh stop "$prom_dir" >/dev/null
) &
expect_code 4 sg deploy staging --release-version 1.4.0 --events "$events"
wait
rm -f "$events"

echo
echo "### 6. what the bakes measured"
sg history staging
sg show "$(last_id staging)" | head -n 30
sg status staging
